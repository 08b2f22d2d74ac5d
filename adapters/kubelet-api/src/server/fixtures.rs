//! What the server's tests share: a backend with logs only, reviews that know a few tokens, an
//! index with the pods `web` (created) and `new` (not yet), and a way to call the router as a
//! connection would.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Extension;
use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::DuplexStream;
use tower::ServiceExt as _;
use vk_domain::kubelet_auth::{NodeAccess, UserInfo};
use vk_domain::logs::LogOptions;
use vk_domain::pod::PodKey;
use vk_domain::runtime::WorkloadId;
use vk_ports::{
    AccessReview, ClusterError, Decision, IndexedPod, PodIndex, PodNetwork, PodStreams,
    ProviderError, StatsProvider,
};

use super::auth::Conn;
use super::{Kubelet, ServingCert, Settings};
use crate::Backend;
use crate::limits::{Connections, Limits};

/// The kubelet API's ports, and nothing else: it never runs a pod's lifecycle or probes.
pub(crate) struct Provider;
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
pub(crate) struct Reviews {
    pub(crate) sars: AtomicUsize,
}
impl AccessReview for Reviews {
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, ClusterError> {
        Ok(match token {
            "alice" | "stats" => Some(UserInfo { username: token.into(), ..UserInfo::default() }),
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

/// Pods `web` (workload `job-web`) and `new` (no workload yet), each with one container `main`,
/// in any namespace.
pub(crate) struct Index;
impl PodIndex for Index {
    fn pod(&self, key: &PodKey) -> Option<IndexedPod> {
        // `kubectl debug` added an ephemeral container `debugger` to each.
        let pod = vk_domain::testing::pod(key.name())
            .namespace(key.namespace())
            .container("main", &[])
            .spec(serde_json::json!({"ephemeralContainers": [{"name": "debugger", "image": "busybox"}]}))
            .build();
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

/// The API on node `vk` with [`Provider`], [`Reviews`] and [`Index`], anonymous access as given.
pub(crate) fn kubelet(anonymous: bool) -> (Arc<Kubelet<Provider, Reviews, Index>>, Arc<Reviews>) {
    let reviews = Arc::new(Reviews::default());
    let cert = ServingCert { cert_pem: String::new(), key_pem: String::new() };
    let mut settings = Settings::new("vk", cert);
    settings.anonymous = anonymous;
    // The fake reviews know short tokens ("alice"), not JWTs.
    settings.limits.jwt_only = false;
    (Kubelet::new(Arc::new(Provider), Arc::clone(&reviews), Arc::new(Index), settings), reviews)
}

/// Serves `k`'s router on one end of an in-memory pipe as one HTTP/1.1 connection with upgrades,
/// whose client presented a verified certificate naming `cert-user` (allowed everything by
/// [`Reviews`]); returns the client's end.
pub(crate) fn connection<P: Backend>(k: &Arc<Kubelet<P, Reviews, Index>>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let cert = Some(UserInfo { username: "cert-user".into(), ..UserInfo::default() });
    let slot = Connections::new(Limits::default()).admit([127, 0, 0, 1].into()).unwrap();
    let svc = TowerToHyperService::new(k.router().layer(Extension(Conn { cert, slot })));
    tokio::spawn(async move {
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), svc)
            .with_upgrades();
        let _ = conn.await;
    });
    client
}

/// Calls the router as a connection from 127.0.0.1 would: with a bearer `token`, or a verified
/// client certificate whose CN is `cert`. The status and the body.
pub(crate) async fn call<A: AccessReview>(
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
