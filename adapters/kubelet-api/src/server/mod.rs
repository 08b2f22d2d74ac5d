//! The kubelet's HTTPS server: TLS with optional client certificates, the kubelet's
//! authentication and authorization, and the routes (`pkg/kubelet/server/server.go`).
//!
//! - TLS: the serving certificate from files, or a self-signed one made at start for the node's
//!   name and addresses ([`self_signed`]), as a kubelet without `--tls-cert-file` does. Client
//!   certificates are requested but not required, so that bearer-token clients (metrics-server)
//!   can connect; when one is presented it must chain to the client CA.
//! - Authentication: a verified client certificate (user = CN, groups = O), else a bearer token
//!   through a TokenReview, else `system:anonymous` when anonymous access is enabled; otherwise
//!   401. Authorization: SubjectAccessReviews on `nodes/<subresource>`
//!   ([`vk_domain::kubelet_auth::access_for`]); 403 when denied. Both results are cached
//!   (the kubelet's webhook cache TTLs: tokens 2 min, allowed 5 min, denied 30 s).
//!
//! The modules, one concern each, around the [`Settings`] and the [`Kubelet`] held here:
//! - `tls`: the serving certificate, the rustls configuration, the user a client certificate
//!   names;
//! - `auth`: the guard in front of every route (authentication, authorization, their caches);
//! - `routes`: the router and the plain routes (pods, logs, stats, metrics); the streaming ones
//!   are `crate::streaming`'s;
//! - `listener`: [`serve`], the accept loop, one task per connection, and the drain.

// Handlers answer errors with the HTTP response itself (axum's idiom); boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod auth;
#[cfg(test)]
pub(crate) mod fixtures;
mod listener;
mod routes;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vk_domain::kubelet_auth::UserInfo;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_domain::stats::CpuCounters;
pub use vk_ports::PodIndex;
use vk_ports::{AccessReview, IndexedPod, ProviderError};

use crate::Backend;

pub use super::limits::Limits;
use super::limits::ReviewGate;
use auth::{Digest, cache, user_weight};
pub(crate) use listener::Open;
pub use listener::serve;
pub use tls::{
    ServingCert, ServingResolver, check, pem_certificates, self_signed, user_from_certificate,
};

/// How the server authenticates and authorizes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's name: authorization is asked for `nodes/<name>`.
    pub node_name: String,
    /// The serving certificate.
    pub cert: ServingCert,
    /// CA certificates (DER) that client certificates must chain to; empty: client
    /// certificates are not asked for.
    pub client_ca: Vec<Vec<u8>>,
    /// Let unauthenticated requests through as `system:anonymous` (then authorized as such).
    pub anonymous: bool,
    /// How long a TokenReview answer is reused (the kubelet's
    /// `--authentication-token-webhook-cache-ttl`, 2 min).
    pub token_ttl: Duration,
    /// How long an allowed SubjectAccessReview is reused (5 min).
    pub allowed_ttl: Duration,
    /// How long a denied one is reused (30 s).
    pub denied_ttl: Duration,
    /// What clients may hold: connections, header and token sizes, review turns, WebSocket and
    /// SPDY sizes.
    pub limits: Limits,
    /// When set, the serving certificate in use (swapped in place as the cluster signs a new one:
    /// `--rotate-server-certificates`) instead of [`Settings::cert`].
    pub serving: Option<ServingResolver>,
    /// The process's Prometheus text, served on `/metrics` to callers allowed `nodes/metrics`
    /// (the kubelet serves its own metrics there); `None`: 404.
    pub metrics: Option<MetricsText>,
    /// How long, once [`serve`] is told to stop, open connections may finish the answers they
    /// are writing (a log read, a stats summary) before they are closed (20 s; the app gives
    /// three quarters of `--shutdown-grace`).
    pub drain: Duration,
    /// How long, once [`serve`] is told to stop, what only its client would end runs on before
    /// it is ended: a followed log's body ends (cleanly), exec, attach and port-forward sessions
    /// are closed (5 s, at most [`Settings::drain`]; their clients open them again on the
    /// restarted node).
    pub stream_drain: Duration,
}

/// Renders the process's metrics in the Prometheus text format.
#[derive(Clone)]
pub struct MetricsText(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsText")
    }
}

impl Settings {
    /// Settings with the kubelet's cache TTLs, no client CA and no anonymous access.
    pub fn new(node_name: &str, cert: ServingCert) -> Self {
        Self {
            node_name: node_name.to_owned(),
            cert,
            client_ca: Vec::new(),
            anonymous: false,
            token_ttl: Duration::from_secs(120),
            allowed_ttl: Duration::from_secs(300),
            denied_ttl: Duration::from_secs(30),
            limits: Limits::default(),
            serving: None,
            metrics: None,
            drain: Duration::from_secs(20),
            stream_drain: Duration::from_secs(5),
        }
    }
}

/// Errors setting the server up. Requests never fail the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The certificate, key or client CA could not be used.
    #[error("kubelet TLS: {0}")]
    Tls(String),
    /// The listener failed.
    #[error("kubelet listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The kubelet API over provider `P`, reviews `A` and pod index `I`.
pub struct Kubelet<P, A, I> {
    pub(crate) provider: Arc<P>,
    access: Arc<A>,
    pub(crate) index: Arc<I>,
    settings: Settings,
    /// TokenReview answers by the token's SHA-256, for `token_ttl`.
    tokens: moka::sync::Cache<Digest, Option<UserInfo>>,
    /// Questions allowed, for `allowed_ttl`, and denied, for `denied_ttl` (the kubelet's webhook
    /// authorizer keeps the two apart the same way).
    allowed: moka::sync::Cache<Digest, ()>,
    denied: moka::sync::Cache<Digest, ()>,
    /// Turns for reviews that miss the caches.
    reviews: ReviewGate,
    cpu: Mutex<CpuCounters>,
    /// The connections and streaming sessions open, waited for and closed by [`serve`] when it
    /// stops.
    pub(crate) open: Open,
}

impl<P: Backend, A: AccessReview, I: PodIndex> Kubelet<P, A, I> {
    /// The API with these parts.
    pub fn new(provider: Arc<P>, access: Arc<A>, index: Arc<I>, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            provider,
            access,
            index,
            tokens: cache(settings.token_ttl, user_weight),
            allowed: cache(settings.allowed_ttl, |()| 0),
            denied: cache(settings.denied_ttl, |()| 0),
            reviews: ReviewGate::new(&settings.limits),
            settings,
            cpu: Mutex::new(CpuCounters::default()),
            open: Open::default(),
        })
    }

    /// The limits clients are held to.
    pub(crate) fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// The pod `ns/name` and its workload ID, or the error response (404 for an unknown pod,
    /// 400 for a pod whose workload is not created yet), after checking that `container`, when
    /// given, is one of its containers (404 otherwise; 400 for one of its ephemeral containers,
    /// which never run here).
    pub(crate) fn workload(
        &self,
        ns: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<WorkloadId, Response> {
        let key = PodKey::new(ns, name)
            .map_err(|e| plain(StatusCode::BAD_REQUEST, format!("invalid pod name: {e}")))?;
        let Some(IndexedPod { pod, workload: id, .. }) = self.index.pod(&key) else {
            return Err(plain(StatusCode::NOT_FOUND, format!("pod \"{ns}/{name}\" not found")));
        };
        if let Some(c) = container {
            let spec = pod.spec.as_ref();
            let ephemeral = spec
                .and_then(|s| s.ephemeral_containers.as_ref())
                .is_some_and(|e| e.iter().any(|x| x.name == c));
            if ephemeral {
                // `kubectl debug` asks for the log of an ephemeral container it finds terminated.
                return Err(plain(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "container \"{c}\" in pod \"{ns}/{name}\" never ran: {}",
                        vk_domain::status::EPHEMERAL_UNSUPPORTED
                    ),
                ));
            }
            let known = spec.is_some_and(|s| {
                s.containers.iter().any(|x| x.name == c)
                    || s.init_containers.iter().flatten().any(|x| x.name == c)
            });
            if !known {
                return Err(plain(
                    StatusCode::NOT_FOUND,
                    format!("container \"{c}\" not found in pod \"{ns}/{name}\""),
                ));
            }
        }
        id.ok_or_else(|| {
            plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {:?} in pod \"{ns}/{name}\" is waiting to start: ContainerCreating",
                    container.unwrap_or_default()
                ),
            )
        })
    }
}

/// A plain-text response, as the kubelet writes its errors.
pub(crate) fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (code, msg.into()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The HTTP answer for a provider error.
pub(crate) fn provider_response(e: ProviderError) -> Response {
    let code = match &e {
        ProviderError::NotFound(_) => StatusCode::NOT_FOUND,
        ProviderError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        ProviderError::Conflict(_) => StatusCode::CONFLICT,
        ProviderError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        ProviderError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    plain(code, e.to_string())
}

/// The decoded pairs of a query string.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect()
}

/// Whether `method` may start a streaming session (the kubelet accepts GET and POST).
pub(crate) fn streaming_method(m: &Method) -> bool {
    m == Method::GET || m == Method::POST
}
