//! The Kubernetes API as a kubelet uses it, over kube-rs: the Node, its Lease, the pods bound to
//! the node, their status, and Events. Only this module talks to the API server.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, NodeStatus, Pod, Secret, Service, ServiceAccount,
};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource};
use serde_json::json;
use tracing::{debug, warn};
use vk_domain::inputs::ServiceInfo;
use vk_domain::jiff::Timestamp;
use vk_domain::node::LEASE_NAMESPACE;
use vk_domain::pod::PodKey;
use vk_ports::{ClusterError, EventType, InputsApi, NodeApi, PodApi, PodWatchEvent, StatusWrite};

pub mod certificates;
pub mod connect;
pub mod election;
pub mod events;
pub mod identity;
pub mod rate;
pub mod review;

/// Counter: Events dropped because [`EVENT_QUEUE`] of them waited to be published.
pub const EVENTS_DROPPED: &str = "vk_events_dropped_total";

/// A kube client for `config` whose requests pass through `limit` (see [`rate`]).
///
/// # Errors
/// The client cannot be built from `config` (TLS material, proxy settings).
pub fn client(config: kube::Config, limit: rate::RateLimit) -> Result<Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&rate::RateLimitLayer::new(limit))
        .build())
}

/// A kube client for `config` that authenticates with the client certificate `identity` holds at
/// each new connection (so a rotated certificate is used without rebuilding the client), and
/// passes requests through `limit`. The API server's CA comes from `config` (`root_cert`); any
/// token or client certificate in `config` is not used. The stack is kube's own
/// (`ClientBuilder::try_from`: base URI, connect/read/write timeouts) with this TLS
/// configuration.
///
/// # Errors
/// `config`'s CA certificates cannot be used.
pub fn client_with_identity(
    config: &kube::Config,
    limit: rate::RateLimit,
    identity: Arc<certificates::Identity>,
) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt as _;
    use tower::ServiceBuilder;
    let tls_error =
        |e: &dyn std::fmt::Display| kube::Error::Service(format!("TLS configuration: {e}").into());
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| tls_error(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(rate::RateLimitLayer::new(limit))
        .service(http_client);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// Field manager written on server-side applies.
pub const FIELD_MANAGER: &str = "virtual-kubelet";

/// Maps a kube-rs error to the port's error, at the seam.
pub fn cluster_error(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) => {
            let msg = format!("{} ({})", s.message, s.reason);
            match s.code {
                404 => ClusterError::NotFound(msg),
                409 if s.reason == "AlreadyExists" => ClusterError::AlreadyExists(msg),
                409 => ClusterError::Conflict(msg),
                429 | 500..=599 => ClusterError::Unavailable(msg),
                _ => ClusterError::Refused(msg),
            }
        }
        other => ClusterError::Unavailable(other.to_string()),
    }
}

/// Whether `e` is the Node authorizer's refusal of an object it has not yet linked to this node
/// ("no relationship found between node '<n>' and this object"): its graph of pods, Secrets,
/// ConfigMaps and ServiceAccounts is fed by its own informers in the API server, so the pod this
/// node was just told of can be a moment ahead of it. The kubelet meets the same race and retries.
fn graph_lag(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("no relationship found between node"))
}

/// How long [`linked`] waits for the Node authorizer's graph: 100 ms doubling to 2 s, ten times, 13 s
/// in all.
const GRAPH_LAG: backon::ExponentialBuilder = backon::ExponentialBuilder::new()
    .with_min_delay(std::time::Duration::from_millis(100))
    .with_max_delay(std::time::Duration::from_secs(2))
    .with_max_times(10);

/// `call` retried while the Node authorizer has not linked its object to this node yet
/// ([`graph_lag`]), then as the API server answers: a refusal that outlasts the lag is a real one
/// and is returned as such.
async fn linked<T, F, Fut>(call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    use backon::Retryable as _;
    call.retry(GRAPH_LAG)
        .when(graph_lag)
        // Not the API server's message: it reads as a refusal ("cannot get resource ..."), and
        // a lag waited out is not one; a refusal that outlasts it is returned with its message.
        .notify(|_, after| {
            debug!(
                ?after,
                "the Node authorizer has not linked the object to this node yet; retrying"
            )
        })
        .await
}

/// A watched pod without what the virtual kubelet never reads: `metadata.managedFields`, the
/// server-side apply bookkeeping of every writer (the creator's and this kubelet's status
/// manager's entries), often as large as the spec. Watched pods are held for as long as they are
/// bound, so this was most of a pod's memory here (found by the benchmarks, `bench/`, P2);
/// client-go informers drop it the same way with a transform (`cache.TransformStripManagedFields`).
fn slim(mut pod: Pod) -> Pod {
    pod.metadata.managed_fields = None;
    pod
}

/// [`NodeApi`] over a kube client.
#[derive(Clone)]
pub struct KubeNodeApi {
    client: Client,
}

impl KubeNodeApi {
    /// Wraps `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl NodeApi for KubeNodeApi {
    async fn server_version(&self) -> Result<Option<String>, ClusterError> {
        let info = self.client.apiserver_version().await.map_err(cluster_error)?;
        Ok(Some(info.git_version))
    }

    async fn register(&self, node: &Node) -> Result<Node, ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), node).await.map_err(cluster_error) {
            Ok(n) => Ok(n),
            Err(ClusterError::AlreadyExists(_)) => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                api.get(name).await.map_err(cluster_error)
            }
            Err(e) => Err(e),
        }
    }

    async fn update_status(&self, name: &str, status: &NodeStatus) -> Result<(), ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = Patch::Strategic(json!({ "status": status }));
        api.patch_status(name, &PatchParams::default(), &patch).await.map_err(cluster_error)?;
        Ok(())
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<(), ClusterError> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let mut body =
            serde_json::to_value(lease).map_err(|e| ClusterError::Refused(e.to_string()))?;
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(body)).await.map_err(cluster_error)?;
        Ok(())
    }
}

/// [`PodApi`] over a kube client; Events are published as the kubelet publishes them
/// ([`events`]), from a queue of [`EVENT_QUEUE`] in a task of their own, through a client of
/// their own (the kubelet's `--event-qps`/`--event-burst`), so that neither their requests nor
/// their rate limit hold a pod's status writes.
#[derive(Clone)]
pub struct KubePodApi {
    client: Client,
    events: tokio::sync::mpsc::Sender<events::Pending>,
    /// Every Service of the cluster, kept by a watch (the kubelet's Service informer): service
    /// link variables are as fresh as the watch, with no request per pod.
    services: Arc<std::sync::OnceLock<Store<Service>>>,
}

/// How long a pod's creation waits for the Service cache's first list.
const SERVICES_READY: std::time::Duration = std::time::Duration::from_secs(30);

/// The Events a [`KubePodApi`] holds before it drops new ones (client-go's event broadcaster
/// queues 1000).
pub const EVENT_QUEUE: usize = 1000;

impl KubePodApi {
    /// Wraps `client`; Events are published through `events_client` from `source: {component:
    /// kubelet, host: node}` ([`events::Publisher`], which counts a repeated Event on the first).
    /// Starts the publishing task: call it inside a Tokio runtime. A failed publication is logged,
    /// not retried.
    pub fn new(client: Client, events_client: Client, node: &str) -> Self {
        let publisher = events::Publisher::new(events_client, node);
        let (events, mut queue) = tokio::sync::mpsc::channel::<events::Pending>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some(ev) = queue.recv().await {
                if let Err(e) = publisher.publish(&ev).await {
                    let r = &ev.regarding;
                    let pod = format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default()
                    );
                    warn!(%pod, reason = %ev.reason, error = %e, "recording the event failed");
                }
            }
        });
        Self { client, events, services: Arc::default() }
    }

    /// The Service cache, started (list, then watch, in a task of its own, with kube-runtime's
    /// back-off) on first use. Call it at start (inside a Tokio runtime) so that it has listed
    /// before the first pod needs it.
    pub fn service_cache(&self) -> Store<Service> {
        self.services
            .get_or_init(|| {
                let (reader, writer) = reflector::store();
                let api: Api<Service> = Api::all(self.client.clone());
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    .modify(|s: &mut Service| s.metadata.managed_fields = None)
                    .reflect(writer);
                tokio::spawn(stream.for_each(|ev| async move {
                    if let Err(e) = ev {
                        warn!(error = %e, "watching Services failed; retrying");
                    }
                }));
                reader
            })
            .clone()
    }
}

impl PodApi for KubePodApi {
    fn watch(&self, node: &str) -> impl Stream<Item = PodWatchEvent> + Send + 'static {
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let mut buffer: Vec<Pod> = Vec::new();
        watcher(api, cfg).default_backoff().filter_map(move |ev| {
            let out = match ev {
                Ok(watcher::Event::Apply(p)) => Some(PodWatchEvent::Applied(slim(p))),
                Ok(watcher::Event::Delete(p)) => Some(PodWatchEvent::Deleted(slim(p))),
                Ok(watcher::Event::Init) => {
                    buffer.clear();
                    None
                }
                Ok(watcher::Event::InitApply(p)) => {
                    buffer.push(slim(p));
                    None
                }
                Ok(watcher::Event::InitDone) => {
                    Some(PodWatchEvent::Relisted(std::mem::take(&mut buffer)))
                }
                Err(e) => {
                    warn!(error = %e, "pod watch failed; retrying with backoff");
                    None
                }
            };
            futures::future::ready(out)
        })
    }

    async fn update_status(
        &self,
        key: &PodKey,
        write: StatusWrite<'_>,
    ) -> Result<(), ClusterError> {
        tracing::trace!(patch = %write.patch, "patching the pod status");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.namespace());
        let patch = Patch::Strategic(write.patch);
        api.patch_status(key.name(), &PatchParams::default(), &patch)
            .await
            .map_err(cluster_error)?;
        Ok(())
    }

    async fn delete(&self, key: &PodKey, uid: &str) -> Result<(), ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.namespace());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(key.name(), &params).await.map_err(cluster_error) {
            Ok(_) => Ok(()),
            Err(ClusterError::NotFound(_) | ClusterError::Conflict(_)) => {
                debug!(pod = %key, "pod already gone or replaced");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn record_event(
        &self,
        pod: &Pod,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), ClusterError> {
        let mut regarding = pod.object_ref(&());
        regarding.field_path = field_path.map(str::to_owned);
        let ev = events::Pending {
            regarding,
            type_,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        self.events.try_send(ev).map_err(|e| {
            metrics::counter!(EVENTS_DROPPED).increment(1);
            ClusterError::Unavailable(match e {
                tokio::sync::mpsc::error::TrySendError::Full(_) => {
                    format!("{EVENT_QUEUE} Events wait to be published; this one is dropped")
                }
                tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                    "Events are no longer published".into()
                }
            })
        })
    }
}

impl InputsApi for KubePodApi {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ClusterError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let Some(cm) = linked(|| api.get_opt(name)).await.map_err(cluster_error)? else {
            return Ok(None);
        };
        let mut out: BTreeMap<String, Vec<u8>> =
            cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        out.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
        Ok(Some(out))
    }

    async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let Some(s) = linked(|| api.get_opt(name)).await.map_err(cluster_error)? else {
            return Ok(None);
        };
        let mut out: BTreeMap<String, Vec<u8>> =
            s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        // `stringData` is write-only; it is folded into `data` by the API server.
        out.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        Ok(Some(out))
    }

    async fn services(&self, namespace: &str) -> Result<Vec<ServiceInfo>, ClusterError> {
        let store = self.service_cache();
        match tokio::time::timeout(SERVICES_READY, store.wait_until_ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ClusterError::Unavailable(format!("the Service cache: {e}"))),
            Err(_) => {
                return Err(ClusterError::Unavailable(
                    "the Services have not been listed yet".into(),
                ));
            }
        }
        let mut list: Vec<Arc<Service>> = store
            .state()
            .into_iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .collect();
        list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(list
            .iter()
            .map(|s| {
                let spec = s.spec.as_ref();
                ServiceInfo {
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    name: s.metadata.name.clone().unwrap_or_default(),
                    cluster_ip: spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default(),
                    ports: spec
                        .and_then(|s| s.ports.as_ref())
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            let name = p.name.clone().unwrap_or_default();
                            (name, p.port, p.protocol.clone().unwrap_or_default())
                        })
                        .collect(),
                }
            })
            .collect())
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, ClusterError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = api.get_opt(namespace).await.map_err(cluster_error)?;
        Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default())
    }

    async fn request_token(
        &self,
        pod: &Pod,
        service_account: &str,
        audience: &str,
        expiration_seconds: i64,
    ) -> Result<(String, Timestamp), ClusterError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: (!audience.is_empty()).then(|| vec![audience.to_owned()]),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            }),
            ..TokenRequest::default()
        };
        let post = PostParams::default();
        let resp: TokenRequest =
            linked(|| api.create_subresource("token", service_account, &post, &req))
                .await
                .map_err(cluster_error)?;
        let status = resp.status.ok_or_else(|| {
            ClusterError::Unavailable("the TokenRequest answer has no status".into())
        })?;
        let token = status.token.filter(|t| !t.is_empty()).ok_or_else(|| {
            ClusterError::Unavailable("the TokenRequest answer has no token".into())
        })?;
        let expires = status.expiration_timestamp.map(|t| t.0).ok_or_else(|| {
            ClusterError::Unavailable("the TokenRequest answer has no expiration".into())
        })?;
        Ok((token, expires))
    }
}

/// Describes this crate's metrics (`# HELP`) to the process's recorder: call it once the recorder
/// is installed.
pub fn describe_metrics() {
    metrics::describe_counter!(
        EVENTS_DROPPED,
        "Events dropped because 1000 of them were waiting to be published."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_pods_lose_managed_fields_only() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running"},
        }))
        .unwrap_or_default();
        assert!(pod.metadata.managed_fields.is_some());
        let mut want = pod.clone();
        want.metadata.managed_fields = None;
        assert_eq!(slim(pod), want);
    }

    #[test]
    fn api_errors_map_to_port_errors() {
        let status = |code, reason: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.into(),
                message: "m".into(),
                ..Default::default()
            }))
        };
        assert!(matches!(cluster_error(status(404, "NotFound")), ClusterError::NotFound(_)));
        assert!(matches!(
            cluster_error(status(409, "AlreadyExists")),
            ClusterError::AlreadyExists(_)
        ));
        assert!(matches!(cluster_error(status(409, "Conflict")), ClusterError::Conflict(_)));
        assert!(matches!(cluster_error(status(403, "Forbidden")), ClusterError::Refused(_)));
        assert!(matches!(
            cluster_error(status(503, "ServiceUnavailable")),
            ClusterError::Unavailable(_)
        ));
    }

    fn forbidden(message: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: message.into(),
            ..Default::default()
        }))
    }

    /// The Node authorizer's "no relationship" is waited out; any other refusal is returned at
    /// once, and one that outlasts the wait is returned too.
    #[tokio::test(start_paused = true)]
    async fn the_node_authorizers_lag_is_waited_out() {
        let lag = "secrets \"s\" is forbidden: User \"system:node:n\" cannot get resource \"secrets\" \
                   in API group \"\" in the namespace \"ns\": no relationship found between node 'n' \
                   and this object";
        let calls = std::sync::atomic::AtomicU32::new(0);
        let got = linked(|| async {
            match calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
                0..3 => Err(forbidden(lag)),
                _ => Ok("the secret"),
            }
        })
        .await;
        assert_eq!(got.ok(), Some("the secret"));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 4);

        let calls = std::sync::atomic::AtomicU32::new(0);
        let got: Result<(), _> = linked(|| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(forbidden("User \"system:node:n\" cannot get resource \"secrets\""))
        })
        .await;
        assert!(matches!(cluster_error(got.unwrap_err()), ClusterError::Refused(_)));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);

        let started = tokio::time::Instant::now();
        let got: Result<(), _> = linked(|| async { Err(forbidden(lag)) }).await;
        assert!(matches!(cluster_error(got.unwrap_err()), ClusterError::Refused(_)));
        assert!(started.elapsed() >= std::time::Duration::from_secs(13), "{:?}", started.elapsed());
    }
}
