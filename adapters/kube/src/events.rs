//! Events as the kubelet writes them: core/v1 Events from `source: {component: kubelet, host:
//! <node>}` (client-go's legacy `record.EventRecorder`, which the kubelet still uses; the
//! events.k8s.io/v1 API forbids `source`, and tools select the kubelet's Events by it:
//! `kubectl get events --field-selector source=kubelet`), aggregated as client-go's correlator
//! and kube-rs' series do: an Event of the same object, field path, type and reason again within
//! [`AGGREGATION_WINDOW`] raises the `count` and `lastTimestamp` of the first, whose message
//! becomes the newest, instead of making another.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use vk_domain::jiff::Timestamp;
use vk_ports::{ClusterError, EventType};

use super::cluster_error;

/// The kubelet's component name in `source` and `reportingComponent`.
pub const COMPONENT: &str = "kubelet";

/// How long a repeated Event is counted on the first one (client-go's `EventCorrelator` keeps
/// its aggregate in an LRU of 4096 for about 10 minutes).
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(600);

/// The most characters of a message kept (the API server refuses more than 1 KiB).
const MAX_MESSAGE: usize = 1000;

/// One Event to publish.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The object it is about (a pod, with `fieldPath` for a container).
    pub regarding: ObjectReference,
    /// Normal or Warning.
    pub type_: EventType,
    /// The kubelet's reason (`Started`, `Unhealthy`, ...).
    pub reason: String,
    /// Free text.
    pub message: String,
}

type Key = (String, String, String, String, String);

/// Publishes [`Pending`] Events for node `node`.
pub struct Publisher {
    client: Client,
    node: String,
    /// The Event made for each recent key, and its count.
    seen: moka::sync::Cache<Key, (String, i32)>,
}

impl Publisher {
    /// A publisher writing through `client`.
    pub fn new(client: Client, node: &str) -> Self {
        let seen = moka::sync::Cache::builder()
            .max_capacity(4096)
            .time_to_live(AGGREGATION_WINDOW)
            .build();
        Self { client, node: node.to_owned(), seen }
    }

    /// Writes `ev`: a new Event, or the count (and message) of the one made for the same object,
    /// field path, type and reason lately.
    ///
    /// # Errors
    /// As the API server answers the create or patch (`Refused` when forbidden).
    pub async fn publish(&self, ev: &Pending) -> Result<(), ClusterError> {
        let r = &ev.regarding;
        let namespace = r.namespace.clone().unwrap_or_default();
        let type_ = match ev.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let message: String = ev.message.chars().take(MAX_MESSAGE).collect();
        let key = (
            namespace.clone(),
            r.uid.clone().unwrap_or_default(),
            r.field_path.clone().unwrap_or_default(),
            type_.to_owned(),
            ev.reason.clone(),
        );
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Timestamp::now();
        if let Some((name, count)) = self.seen.get(&key) {
            let patch =
                json!({"count": count + 1, "lastTimestamp": Time(now), "message": &message});
            match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.seen.insert(key, (name, count + 1));
                    return Ok(());
                }
                Err(e) => match cluster_error(e) {
                    ClusterError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        let name =
            format!("{}.{:x}", r.name.as_deref().unwrap_or_default(), now.as_nanosecond().max(0));
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            involved_object: r.clone(),
            reason: Some(ev.reason.clone()),
            message: Some(message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some(COMPONENT.to_owned()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(self.node.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await.map_err(cluster_error)?;
        self.seen.insert(key, (name, 1));
        Ok(())
    }
}
