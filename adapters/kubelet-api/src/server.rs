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

// Handlers answer errors with the HTTP response itself (axum's idiom); boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use vk_domain::jiff::Timestamp;
use vk_domain::kubelet_auth::{NodeAccess, UserInfo, access_for};
use vk_domain::logs::LogOptions;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_domain::stats::{self, CpuCounters};
pub use vk_ports::PodIndex;
use vk_ports::{AccessReview, IndexedPod, ProviderError};

use crate::Backend;

pub use super::limits::Limits;
use super::limits::{self, Connections, ReviewGate, Slot};
use super::streaming;

/// What picks the serving certificate of each new connection: any `rustls` resolver (the app
/// gives `vk_kube::certificates::Identity`, swapped in place on rotation).
pub type ServingResolver = Arc<dyn rustls::server::ResolvesServerCert>;

/// A serving certificate chain and its key, PEM.
#[derive(Clone)]
pub struct ServingCert {
    /// The certificate chain, PEM (leaf first).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
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

/// A self-signed serving certificate for `node_name` and `addresses` (the subject alternative
/// names a kubelet without `--tls-cert-file` puts in its own: the hostname and the node's IPs),
/// valid for a year from now, as the kubelet's (`cert.GenerateSelfSignedCertKey`). Made anew at
/// each start; a cluster-signed one that rotates is `--rotate-server-certificates`.
///
/// # Errors
/// [`ServerError::Tls`] when key generation or signing fails.
pub fn self_signed(node_name: &str, addresses: &[IpAddr]) -> Result<ServingCert, ServerError> {
    let tls = |e: rcgen::Error| ServerError::Tls(e.to_string());
    let mut names = vec![node_name.to_owned()];
    names.extend(addresses.iter().map(ToString::to_string));
    let mut params = rcgen::CertificateParams::new(names).map_err(tls)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{node_name}@virtual-kubelet"));
    // An hour back, for clients whose clock is a little behind ours.
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok(ServingCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

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
    /// How long, once [`serve`] is told to stop, open connections may finish the requests they
    /// are answering and streaming sessions (exec, attach, port-forward) may run before they are
    /// closed (5 s; the app gives 5 s or three quarters of a shorter `--shutdown-grace`).
    pub drain: Duration,
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
            drain: Duration::from_secs(5),
        }
    }
}

/// Bytes each answer cache holds at most (keys and answers as weighed by [`cache`]).
const CACHE_BYTES: u64 = 16 << 20;

/// A bounded cache whose entries live `ttl` from their insertion (moka's `time_to_live`),
/// weighed in bytes: the key, moka's overhead (about 64 bytes) and `weight` of the answer.
fn cache<V>(ttl: Duration, weight: fn(&V) -> u32) -> moka::sync::Cache<Digest, V>
where
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(CACHE_BYTES)
        .weigher(move |_: &Digest, v: &V| 32 + 64 + weight(v))
        .time_to_live(ttl)
        .build()
}

/// A SHA-256, the key of the answer caches: of a token (which is never kept), or of a whole
/// SubjectAccessReview question (user, UID, groups, extra, verb, subresource, node), so that an
/// answer is reused only for the same question.
type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        // Length-prefixed, so that parts cannot run into each other.
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The cache key of `access` asked for `user`.
fn question(user: &UserInfo, access: &NodeAccess) -> Digest {
    let mut parts: Vec<&[u8]> = vec![
        user.username.as_bytes(),
        user.uid.as_bytes(),
        access.verb.as_bytes(),
        access.subresource.as_bytes(),
        access.node.as_bytes(),
    ];
    parts.push(b"groups");
    parts.extend(user.groups.iter().map(String::as_bytes));
    parts.push(b"extra");
    for (k, vs) in &user.extra {
        parts.push(k.as_bytes());
        parts.extend(vs.iter().map(String::as_bytes));
        parts.push(b"");
    }
    sha256(&parts)
}

/// Bytes a TokenReview answer holds, roughly (24 per string for its header).
fn user_weight(u: &Option<UserInfo>) -> u32 {
    let strings = |v: &[String]| v.iter().map(|x| x.len() + 24).sum::<usize>();
    let n = u.as_ref().map_or(0, |u| {
        u.username.len()
            + u.uid.len()
            + strings(&u.groups)
            + u.extra.iter().map(|(k, v)| k.len() + 24 + strings(v)).sum::<usize>()
    });
    u32::try_from(n).unwrap_or(u32::MAX)
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

/// What [`serve`] drains when it stops: every connection and streaming session runs as a task of
/// `tasks`; `draining` asks connections to finish what they answer and close (hyper's graceful
/// shutdown), `closing` ends whatever is still open once [`Settings::drain`] has passed
/// (linkerd2-proxy's drain, with tokio-util's `TaskTracker`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Open {
    tasks: tokio_util::task::TaskTracker,
    draining: tokio_util::sync::CancellationToken,
    closing: tokio_util::sync::CancellationToken,
}

impl Open {
    /// Runs a streaming session (an upgraded connection) until it ends or the drain closes it.
    pub(crate) fn session(&self, session: impl Future<Output = ()> + Send + 'static) {
        let closing = self.closing.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = session => {}
                () = closing.cancelled() => debug!("streaming session closed by the shutdown"),
            }
        });
    }

    /// Drains: connections asked to finish, then after `grace` everything closed; returns once
    /// every task has ended.
    async fn drain(&self, grace: Duration) {
        self.tasks.close();
        self.draining.cancel();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            info!(open = self.tasks.len(), ?grace, "closing what is still open on the kubelet API");
            self.closing.cancel();
            self.tasks.wait().await;
        }
    }
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

    /// The routes, with authentication and authorization in front of every one.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/pods", get(pods::<P, A, I>))
            .route("/pods/", get(pods::<P, A, I>))
            .route("/runningpods/", get(running_pods::<P, A, I>))
            .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs::<P, A, I>))
            .route("/stats/summary", get(stats_summary::<P, A, I>))
            .route("/stats/summary/", get(stats_summary::<P, A, I>))
            .route("/metrics/resource", get(metrics_resource::<P, A, I>))
            .route("/metrics", get(process_metrics::<P, A, I>))
            .route("/exec/{ns}/{pod}/{container}", any(streaming::exec::<P, A, I>))
            .route("/exec/{ns}/{pod}/{uid}/{container}", any(streaming::exec::<P, A, I>))
            .route("/attach/{ns}/{pod}/{container}", any(streaming::attach::<P, A, I>))
            .route("/attach/{ns}/{pod}/{uid}/{container}", any(streaming::attach::<P, A, I>))
            .route("/portForward/{ns}/{pod}", any(streaming::port_forward::<P, A, I>))
            .route("/portForward/{ns}/{pod}/{uid}", any(streaming::port_forward::<P, A, I>))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(self), guard::<P, A, I>))
            .with_state(Arc::clone(self))
    }

    /// The user `token` names, `None` when the API server does not authenticate it; reviewed
    /// once per [`Settings::token_ttl`].
    ///
    /// # Errors
    /// The response to send instead: 401 for a failed review, 429 when the peer's review bucket
    /// is empty or no review turn frees within the wait. A token refused without a review (size,
    /// shape) is `Ok(None)`.
    async fn user_for_token(
        &self,
        token: &str,
        peer: IpAddr,
    ) -> Result<Option<UserInfo>, Response> {
        if let Err(why) = limits::check_token(token, &self.settings.limits) {
            metrics::counter!(limits::REVIEWS_REFUSED, "reason" => why.label()).increment(1);
            return Ok(None);
        }
        let key = sha256(&[token.as_bytes()]);
        if let Some(u) = self.tokens.get(&key) {
            return Ok(u);
        }
        let _turn = self.turn(peer).await?;
        match self.access.authenticate(token).await {
            Ok(u) => {
                if u.is_none() {
                    self.reviews.failed(peer);
                }
                self.tokens.insert(key, u.clone());
                Ok(u)
            }
            Err(e) => {
                warn!(error = %e, "TokenReview failed");
                Err(plain(StatusCode::UNAUTHORIZED, "Unauthorized"))
            }
        }
    }

    /// A review turn for `peer`, or the 429 to answer.
    async fn turn(&self, peer: IpAddr) -> Result<limits::Turn<'_>, Response> {
        self.reviews.turn(peer).await.map_err(|why| {
            metrics::counter!(limits::REVIEWS_REFUSED, "reason" => why.label()).increment(1);
            let mut r =
                plain(StatusCode::TOO_MANY_REQUESTS, "Too many requests, please try again later.");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        })
    }

    async fn allowed(
        &self,
        user: &UserInfo,
        access: &NodeAccess,
        peer: IpAddr,
    ) -> Result<bool, Response> {
        let key = question(user, access);
        if self.allowed.contains_key(&key) {
            return Ok(true);
        }
        if self.denied.contains_key(&key) {
            return Ok(false);
        }
        let _turn = self.turn(peer).await?;
        match self.access.authorize(user, access).await {
            Ok(d) => {
                let answers = if d.allowed { &self.allowed } else { &self.denied };
                answers.insert(key, ());
                Ok(d.allowed)
            }
            Err(e) => {
                warn!(error = %e, "SubjectAccessReview failed");
                Err(plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Authorization error (user={}): {e}", user.username),
                ))
            }
        }
    }

    /// The pod `ns/name` and its workload ID, or the error response (404 for an unknown pod,
    /// 400 for a pod whose workload is not created yet), after checking that `container`, when
    /// given, is one of its containers (404 otherwise).
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

    async fn usage(&self) -> Result<stats::Usage, Response> {
        let mut usage = self.provider.usage().await.map_err(provider_response)?;
        // The one lock policy (ARCHITECTURE.md): a poisoned lock is taken as it is.
        self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fill(&mut usage);
        Ok(usage)
    }
}

/// What the server knows of a connection, set per connection: who its verified client
/// certificate names, and its slot (peer address; marked authenticated by the first request
/// that authenticates).
#[derive(Clone)]
struct Conn {
    cert: Option<UserInfo>,
    slot: Slot,
}

/// The user a DER certificate names: CN as the user, O values as groups.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_owned)).collect();
    Some(UserInfo { username, groups, ..UserInfo::default() })
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

async fn guard<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(conn) = req.extensions().get::<Conn>().cloned() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no connection state");
    };
    let peer = conn.slot.peer();
    let user = match conn.cert {
        Some(u) => u,
        None => match bearer(req.headers()) {
            Some(token) => match k.user_for_token(token, peer).await {
                Ok(Some(u)) => {
                    conn.slot.authenticated();
                    u
                }
                Ok(None) => return plain(StatusCode::UNAUTHORIZED, "Unauthorized"),
                Err(r) => return r,
            },
            None if k.settings.anonymous => UserInfo::anonymous(),
            None => return plain(StatusCode::UNAUTHORIZED, "Unauthorized"),
        },
    };
    let accesses = access_for(req.method().as_str(), req.uri().path(), &k.settings.node_name);
    for a in &accesses {
        match k.allowed(&user, a, peer).await {
            Ok(true) => {
                debug!(user = %user.username, verb = a.verb, subresource = a.subresource, path = req.uri().path(), "kubelet API request");
                return next.run(req).await;
            }
            Ok(false) => {}
            Err(r) => return r,
        }
    }
    let a = accesses.first();
    plain(
        StatusCode::FORBIDDEN,
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            user.username,
            a.map_or("get", |a| a.verb),
            a.map_or("proxy", |a| a.subresource)
        ),
    )
}

fn pod_list(items: Vec<Pod>) -> Response {
    let body = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    axum::Json(body).into_response()
}

async fn pods<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
) -> Response {
    pod_list(k.index.pods().into_iter().map(|p| Arc::unwrap_or_clone(p.pod)).collect())
}

async fn running_pods<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
) -> Response {
    // The kubelet's /runningpods/ lists what its runtime runs, as bare pods: name, namespace,
    // UID and containers.
    let items = k
        .index
        .pods()
        .into_iter()
        .filter(|p| p.running)
        .map(|p| Arc::unwrap_or_clone(p.pod))
        .map(|p| Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: p.metadata.name,
                namespace: p.metadata.namespace,
                uid: p.metadata.uid,
                ..Default::default()
            },
            spec: p.spec.map(|s| k8s_openapi::api::core::v1::PodSpec {
                containers: s
                    .containers
                    .into_iter()
                    .map(|c| k8s_openapi::api::core::v1::Container {
                        name: c.name,
                        image: c.image,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: None,
        })
        .collect();
    pod_list(items)
}

/// The decoded pairs of a query string.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or_default().as_bytes()).into_owned().collect()
}

async fn container_logs<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = query_pairs(q.as_deref());
    let opts = match LogOptions::from_query(
        pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        Timestamp::now(),
    ) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("invalid log options: {e}")),
    };
    let id = match k.workload(&ns, &pod, Some(&container)) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match k.provider.logs(&id, &container, &opts).await {
        Ok(stream) => {
            let guard = streaming::OpenStream::new("logs");
            let stream = futures::StreamExt::map(stream, move |item| {
                let _keep = &guard;
                item.map_err(std::io::Error::other)
            });
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Err(e) => provider_response(e),
    }
}

async fn stats_summary<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
) -> Response {
    match k.usage().await {
        Ok(u) => axum::Json(stats::summary(&k.settings.node_name, &u)).into_response(),
        Err(r) => r,
    }
}

async fn metrics_resource<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
) -> Response {
    match k.usage().await {
        Ok(u) => {
            let mut r = stats::resource_metrics(&u).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(r) => r,
    }
}

async fn process_metrics<P: Backend, A: AccessReview, I: PodIndex>(
    State(k): State<Arc<Kubelet<P, A, I>>>,
) -> Response {
    match &k.settings.metrics {
        Some(MetricsText(render)) => {
            let mut r = render().into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        None => plain(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

fn tls_config(settings: &Settings) -> Result<rustls::ServerConfig, ServerError> {
    let tls = |e: &dyn std::fmt::Display| ServerError::Tls(e.to_string());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(settings.cert.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&format!("serving certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ServerError::Tls("serving certificate: no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(settings.cert.key_pem.as_bytes())
        .map_err(|e| tls(&format!("serving key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let builder = match settings.client_ca.as_slice() {
        [] => builder.with_no_client_auth(),
        cas => {
            let mut roots = rustls::RootCertStore::empty();
            for c in cas {
                roots
                    .add(CertificateDer::from(c.clone()))
                    .map_err(|e| tls(&format!("client CA: {e}")))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls(&format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = match &settings.serving {
        Some(identity) => builder.with_cert_resolver(Arc::clone(identity) as _),
        None => builder.with_single_cert(certs, key).map_err(|e| tls(&e))?,
    };
    // Upgrades (exec, attach, port-forward) are HTTP/1.1, which is all the API server needs.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates (DER) of a PEM bundle.
///
/// # Errors
/// [`ServerError::Tls`] when the PEM is malformed or holds no certificate.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, ServerError> {
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    if certs.is_empty() {
        return Err(ServerError::Tls("no certificate in the PEM".into()));
    }
    Ok(certs)
}

/// Checks the TLS material of `settings` (so that bad files stop the process at start).
///
/// # Errors
/// [`ServerError::Tls`] naming the certificate, key or client CA that cannot be used.
pub fn check(settings: &Settings) -> Result<(), ServerError> {
    tls_config(settings).map(|_| ())
}

/// Serves `kubelet` on `listener` until `shutdown` resolves, then drains: no new connection is
/// taken, open ones finish the requests they are answering (idle keep-alive connections close at
/// once), and whatever is still open after [`Settings::drain`] (a followed log, an exec session)
/// is closed. Returns once every connection and session has ended.
///
/// # Errors
/// [`ServerError::Tls`] when the TLS material cannot be used.
pub async fn serve<P: Backend, A: AccessReview, I: PodIndex>(
    listener: TcpListener,
    kubelet: Arc<Kubelet<P, A, I>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&kubelet.settings)?));
    let app = kubelet.router();
    let connections = Connections::new(kubelet.settings.limits.clone());
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    info!(addr = ?listener.local_addr().ok(), "serving the kubelet API");
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            _ = prune.tick() => {
                kubelet.reviews.prune();
                continue;
            }
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "kubelet API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match connections.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                debug!(%peer, ?why, "kubelet API connection refused at its cap");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = kubelet.settings.limits.clone();
        let (draining, closing) = (kubelet.open.draining.clone(), kubelet.open.closing.clone());
        kubelet.open.tasks.spawn(async move {
            let evicted = slot.clone();
            tokio::select! {
                () = connection(tcp, peer, slot, acceptor, app, limits, draining) => {}
                () = evicted.evicted() => debug!(%peer, "unauthenticated connection closed for a newer one"),
                () = closing.cancelled() => debug!(%peer, "connection closed by the shutdown"),
            }
        });
    }
    drop(listener);
    kubelet.open.drain(kubelet.settings.drain).await;
    info!("the kubelet API stopped");
    Ok(())
}

/// Serves one accepted connection: the TLS handshake within [`Limits::handshake_timeout`],
/// then HTTP/1.1 with the header limits, until the client or the server ends it, or `draining`
/// asks it to finish the request it answers and close.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: Slot,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    limits: Limits,
    draining: tokio_util::sync::CancellationToken,
) {
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let handshake = tokio::select! {
        r = handshake => r,
        () = draining.cancelled() => return,
    };
    let tls = match handshake {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| user_from_certificate(c.as_ref()));
    if cert.is_some() {
        slot.authenticated();
    }
    let svc = TowerToHyperService::new(app.layer(Extension(Conn { cert, slot })));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let http = builder.http1_only();
    let conn = http.serve_connection_with_upgrades(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        () = draining.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        debug!(%peer, error = %e, "kubelet API connection ended");
    }
}

/// Whether `method` may start a streaming session (the kubelet accepts GET and POST).
pub(crate) fn streaming_method(m: &Method) -> bool {
    m == Method::GET || m == Method::POST
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tower::ServiceExt as _;
    use vk_ports::{ClusterError, Decision, PodNetwork, PodStreams, StatsProvider};

    use super::*;

    /// The kubelet API's ports, and nothing else: it never runs a pod's lifecycle or probes.
    struct Provider;
    impl PodNetwork for Provider {}
    impl StatsProvider for Provider {}

    impl PodStreams for Provider {
        async fn logs(
            &self,
            id: &WorkloadId,
            container: &str,
            opts: &LogOptions,
        ) -> Result<vk_ports::ByteStream, ProviderError> {
            let text = format!("{id}/{container} tail={:?}\n", opts.tail_lines);
            Ok(Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(text))])))
        }
    }

    /// Tokens "alice" and "stats" name those users ("down": the API server is unreachable).
    /// alice may use nodes/proxy except with `create`; stats may get nodes/stats only.
    #[derive(Default)]
    struct Reviews {
        sars: AtomicUsize,
    }
    impl AccessReview for Reviews {
        async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, ClusterError> {
            Ok(match token {
                "alice" | "stats" => {
                    Some(UserInfo { username: token.into(), ..UserInfo::default() })
                }
                "down" => return Err(ClusterError::Unavailable("no API server".into())),
                _ => None,
            })
        }
        async fn authorize(
            &self,
            user: &UserInfo,
            access: &NodeAccess,
        ) -> Result<Decision, ClusterError> {
            self.sars.fetch_add(1, Ordering::SeqCst);
            let allowed = match user.username.as_str() {
                "alice" => access.subresource == "proxy" && access.verb != "create",
                "stats" => access.subresource == "stats",
                "cert-user" => true,
                _ => false,
            };
            assert_eq!(access.node, "vk");
            Ok(Decision { allowed, reason: String::new() })
        }
    }

    struct Index;
    impl PodIndex for Index {
        fn pod(&self, key: &PodKey) -> Option<IndexedPod> {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": key.name(), "namespace": key.namespace()},
                "spec": {"containers": [{"name": "main"}]},
            }))
            .ok()?;
            let workload = match key.name() {
                "web" => Some("job-web".into()),
                "new" => None,
                _ => return None,
            };
            Some(IndexedPod { pod: Arc::new(pod), running: workload.is_some(), workload })
        }
        fn pods(&self) -> Vec<IndexedPod> {
            Vec::new()
        }
    }

    fn kubelet(anonymous: bool) -> (Arc<Kubelet<Provider, Reviews, Index>>, Arc<Reviews>) {
        let reviews = Arc::new(Reviews::default());
        let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
        let mut settings = Settings::new("vk", cert);
        settings.anonymous = anonymous;
        // The fake reviews know short tokens ("alice"), not JWTs.
        settings.limits.jwt_only = false;
        (Kubelet::new(Arc::new(Provider), Arc::clone(&reviews), Arc::new(Index), settings), reviews)
    }

    async fn call<A: AccessReview>(
        k: &Arc<Kubelet<Provider, A, Index>>,
        method: Method,
        path: &str,
        token: Option<&str>,
        cert: Option<&str>,
    ) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        let cert = cert.map(|cn| UserInfo { username: cn.into(), ..UserInfo::default() });
        let slot = Connections::new(Limits::default()).admit([127, 0, 0, 1].into()).unwrap();
        req.extensions_mut().insert(Conn { cert, slot });
        let resp = k.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn unauthenticated_requests_get_401_unless_anonymous_is_on() {
        let (k, _) = kubelet(false);
        assert_eq!(call(&k, Method::GET, "/healthz", None, None).await.0, 401);
        assert_eq!(call(&k, Method::GET, "/stats/summary", Some("bogus"), None).await.0, 401);
        assert_eq!(call(&k, Method::GET, "/stats/summary", Some("down"), None).await.0, 401);
        let (k, _) = kubelet(true);
        let (s, body) = call(&k, Method::GET, "/healthz", None, None).await;
        assert_eq!(
            (s, body.as_str()),
            (
                403,
                "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=healthz)"
            )
        );
    }

    #[tokio::test]
    async fn authorization_follows_the_kubelet_mapping() {
        let (k, reviews) = kubelet(false);
        let logs = "/containerLogs/ns/web/main?tailLines=2";
        let (s, body) = call(&k, Method::GET, logs, Some("alice"), None).await;
        assert_eq!((s, body.as_str()), (200, "job-web/main tail=Some(2)\n"));
        // SPDY exec is a POST: create nodes/proxy, which alice lacks.
        let (s, body) =
            call(&k, Method::POST, "/exec/ns/web/main?command=true&output=1", Some("alice"), None)
                .await;
        assert_eq!(s, 403, "{body}");
        assert!(body.contains("verb=create") && body.contains("subresource=proxy"), "{body}");
        // WebSocket exec is a GET: allowed, then refused for want of an upgrade.
        let (s, body) =
            call(&k, Method::GET, "/exec/ns/web/main?command=true&output=1", Some("alice"), None)
                .await;
        assert_eq!((s, body.as_str()), (400, "Upgrade request required"));
        // /pods: nodes/pods denied, then the proxy fallback allowed.
        assert_eq!(call(&k, Method::GET, "/pods", Some("alice"), None).await.0, 200);
        assert_eq!(call(&k, Method::GET, "/stats/summary", Some("alice"), None).await.0, 403);
        assert_eq!(
            call(&k, Method::GET, "/stats/summary", Some("stats"), None).await.0,
            501,
            "stats allowed; the fake provider has none"
        );
        assert_eq!(call(&k, Method::GET, logs, Some("stats"), None).await.0, 403);
        // Decisions are cached.
        let before = reviews.sars.load(Ordering::SeqCst);
        assert_eq!(call(&k, Method::GET, logs, Some("alice"), None).await.0, 200);
        assert_eq!(reviews.sars.load(Ordering::SeqCst), before);
        // A verified client certificate needs no token.
        assert_eq!(call(&k, Method::GET, logs, None, Some("cert-user")).await.0, 200);
    }

    /// The process's metrics on the kubelet port: only for callers allowed `nodes/metrics`.
    #[tokio::test]
    async fn process_metrics_need_nodes_metrics() {
        let reviews = Arc::new(Reviews::default());
        let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
        let mut settings = Settings::new("vk", cert);
        settings.limits.jwt_only = false;
        settings.metrics = Some(MetricsText(Arc::new(|| "vk_up 1\n".to_owned())));
        let k = Kubelet::new(Arc::new(Provider), reviews, Arc::new(Index), settings);
        assert_eq!(call(&k, Method::GET, "/metrics", None, None).await.0, 401);
        assert_eq!(call(&k, Method::GET, "/metrics", Some("stats"), None).await.0, 403);
        let (code, body) = call(&k, Method::GET, "/metrics", None, Some("cert-user")).await;
        assert_eq!((code, body.as_str()), (200, "vk_up 1\n"));
        let (k, _) = kubelet(false);
        assert_eq!(call(&k, Method::GET, "/metrics", None, Some("cert-user")).await.0, 404);
    }

    /// Token answers are keyed by a digest, refused tokens never reach a review, and a peer
    /// that keeps sending unknown tokens is answered 429 without one.
    #[tokio::test]
    async fn token_floods_cost_the_peer_not_the_node() {
        #[derive(Default)]
        struct Counting(AtomicUsize);
        impl AccessReview for Counting {
            async fn authenticate(&self, _: &str) -> Result<Option<UserInfo>, ClusterError> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(None)
            }
            async fn authorize(
                &self,
                _: &UserInfo,
                _: &NodeAccess,
            ) -> Result<Decision, ClusterError> {
                Ok(Decision { allowed: false, reason: String::new() })
            }
        }
        let reviews = Arc::new(Counting::default());
        let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
        let mut settings = Settings::new("vk", cert);
        settings.limits.peer_review_burst = 20;
        settings.limits.peer_reviews_per_second = 1;
        let k = Kubelet::new(Arc::new(Provider), Arc::clone(&reviews), Arc::new(Index), settings);
        let reviewed = || reviews.0.load(Ordering::SeqCst);
        // Not a JWT, or too long: 401 without a review.
        assert_eq!(
            call(&k, Method::GET, "/pods", Some("abcdef.0123456789abcdef"), None).await.0,
            401
        );
        let long = format!("a.{}.c", "b".repeat(9000));
        assert_eq!(call(&k, Method::GET, "/pods", Some(&long), None).await.0, 401);
        assert_eq!(reviewed(), 0);
        // Unknown JWTs: each failure costs the peer five; after four the bucket is empty.
        let mut codes = Vec::new();
        for i in 0..6 {
            codes.push(call(&k, Method::GET, "/pods", Some(&format!("a.b.{i}")), None).await.0);
        }
        assert_eq!(codes, [401, 401, 401, 401, 429, 429]);
        assert_eq!(reviewed(), 4);
        // A token seen before is answered from the cache, without a turn.
        assert_eq!(call(&k, Method::GET, "/pods", Some("a.b.0"), None).await.0, 401);
        assert_eq!(reviewed(), 4);
    }

    #[tokio::test]
    async fn answers_are_kept_for_their_own_time() {
        // Allowed and denied answers live for their TTLs (the kubelet's 5 min and 30 s, short
        // here), each counted from when it was given.
        let reviews = Arc::new(Reviews::default());
        let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
        let mut settings = Settings::new("vk", cert);
        settings.allowed_ttl = Duration::from_secs(60);
        settings.denied_ttl = Duration::from_millis(200);
        settings.limits.jwt_only = false;
        let k = Kubelet::new(Arc::new(Provider), Arc::clone(&reviews), Arc::new(Index), settings);
        let sars = || reviews.sars.load(Ordering::SeqCst);
        let allowed = "/containerLogs/ns/web/main";
        let denied = "/stats/summary";
        assert_eq!(call(&k, Method::GET, allowed, Some("alice"), None).await.0, 200);
        assert_eq!(call(&k, Method::GET, denied, Some("alice"), None).await.0, 403);
        assert_eq!(sars(), 2);
        assert_eq!(call(&k, Method::GET, allowed, Some("alice"), None).await.0, 200);
        assert_eq!(call(&k, Method::GET, denied, Some("alice"), None).await.0, 403);
        assert_eq!(sars(), 2, "both answers cached");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(call(&k, Method::GET, allowed, Some("alice"), None).await.0, 200);
        assert_eq!(sars(), 2, "the allowed answer is still cached");
        assert_eq!(call(&k, Method::GET, denied, Some("alice"), None).await.0, 403);
        assert_eq!(sars(), 3, "the denied answer expired and was asked again");
    }

    #[tokio::test]
    async fn bad_requests_are_named() {
        let (k, _) = kubelet(false);
        let get = |p: &'static str| {
            let k = Arc::clone(&k);
            async move { call(&k, Method::GET, p, None, Some("cert-user")).await }
        };
        let (s, body) = get("/containerLogs/ns/gone/main").await;
        assert_eq!((s, body.as_str()), (404, "pod \"ns/gone\" not found"));
        assert_eq!(get("/containerLogs/ns/web/other").await.0, 404);
        assert_eq!(get("/containerLogs/ns/new/main").await.0, 400, "not created yet");
        let (s, body) = get("/containerLogs/ns/web/main?limitBytes=0").await;
        assert_eq!(s, 400);
        assert!(body.contains("limitBytes"), "{body}");
        let (s, body) = get("/exec/ns/web/main?output=1").await;
        assert_eq!(
            (s, body.as_str()),
            (400, "you must specify at least one command for the container")
        );
        assert_eq!(get("/attach/ns/web/main?tty=1&stdin=0").await.0, 400, "no stream at all");
        assert_eq!(get("/portForward/ns/gone").await.0, 404);
        assert_eq!(get("/nowhere").await.0, 404);
    }

    #[tokio::test]
    async fn the_uid_segment_is_taken_and_the_pod_found_by_name() {
        // `/exec|attach/{ns}/{pod}/{uid}/{container}` and `/portForward/{ns}/{pod}/{uid}` are the
        // same handlers as without the UID; the last segment is the container, the UID is not
        // compared (the kubelet's `FindPod` looks by full name).
        let (k, _) = kubelet(false);
        let get = |p: &'static str| {
            let k = Arc::clone(&k);
            async move { call(&k, Method::GET, p, None, Some("cert-user")).await }
        };
        for path in [
            "/exec/ns/web/any-uid/main?command=true&output=1",
            "/attach/ns/web/any-uid/main?output=1",
        ] {
            assert_eq!(get(path).await, (400, "Upgrade request required".to_owned()), "{path}");
        }
        let (s, body) = get("/exec/ns/web/any-uid/other?command=true&output=1").await;
        assert_eq!((s, body.as_str()), (404, "container \"other\" not found in pod \"ns/web\""));
        let (s, body) = get("/attach/ns/gone/any-uid/main?output=1").await;
        assert_eq!((s, body.as_str()), (404, "pod \"ns/gone\" not found"));
        assert_eq!(
            get("/portForward/ns/web/any-uid").await,
            (400, "Upgrade request required".to_owned())
        );
        assert_eq!(get("/portForward/ns/gone/any-uid").await.0, 404);
    }

    #[test]
    fn certificates_name_users_and_groups() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.username, "kube-apiserver-kubelet-client");
        assert_eq!(user.groups, ["system:masters"]);
        let own = self_signed("vk", &["10.0.0.5".parse().unwrap()]).unwrap();
        let mut settings = Settings::new("vk", own.clone());
        assert!(check(&settings).is_ok());
        settings.client_ca = pem_certificates(own.cert_pem.as_bytes()).unwrap();
        assert!(check(&settings).is_ok());
        settings.cert.key_pem = "junk".into();
        assert!(matches!(check(&settings), Err(ServerError::Tls(_))));
    }

    /// The self-signed certificate is valid now and for a year, as the kubelet's.
    #[test]
    fn self_signed_is_valid_for_a_year_from_now() {
        let own = self_signed("vk", &[]).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(own.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let at = |t: x509_parser::time::ASN1Time| {
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap())
        };
        let (not_before, not_after) =
            (at(cert.validity().not_before), at(cert.validity().not_after));
        let now = std::time::SystemTime::now();
        assert!(not_before < now && now < not_after);
        let life = not_after.duration_since(not_before).unwrap();
        let year = Duration::from_secs(365 * 24 * 3600);
        assert!(life > year && life <= year + Duration::from_secs(3600), "{life:?}");
    }

    /// Told to stop, the server takes no new connection, closes one still in its handshake at
    /// once (well within the drain time), and returns.
    #[tokio::test]
    async fn serve_stops_and_closes_what_is_open() {
        use tokio::io::AsyncReadExt as _;
        let mut settings = Settings::new("vk", self_signed("vk", &[]).unwrap());
        settings.drain = Duration::from_secs(30);
        let k = Kubelet::new(
            Arc::new(Provider),
            Arc::new(Reviews::default()),
            Arc::new(Index),
            settings,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, k, async {
            let _ = stopped.await;
        }));
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(()).unwrap();
        let served = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    /// Sets its flag when dropped.
    struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Some(t) = self.0.take() {
                let _ = t.send(());
            }
        }
    }

    /// A session that ends within the drain time ends as it would have; one that does not is
    /// closed when the time is up, and the drain returns then.
    #[tokio::test(start_paused = true)]
    async fn the_drain_lets_sessions_finish_then_closes_the_rest() {
        let open = Open::default();
        let (finished, short) = tokio::sync::oneshot::channel();
        open.session(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = finished.send(());
        });
        let (gone, long) = tokio::sync::oneshot::channel();
        open.session(async move {
            let _flag = Dropped(Some(gone));
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        open.drain(Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "{took:?}");
        assert!(short.await.is_ok(), "the short session was cut");
        assert!(long.await.is_ok(), "the endless session was not closed");

        // With only short work the drain ends with it.
        let open = Open::default();
        open.session(tokio::time::sleep(Duration::from_secs(1)));
        let started = tokio::time::Instant::now();
        open.drain(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
