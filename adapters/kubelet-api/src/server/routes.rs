//! The router, and the plain routes: `/pods`, `/runningpods` (with or without its slash), `/containerLogs`,
//! `/stats/summary`, `/metrics/resource`, `/metrics` and `/healthz` (the streaming routes are
//! [`crate::streaming`]'s).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use k8s_openapi::api::core::v1::Pod;
use vk_domain::jiff::Timestamp;
use vk_domain::logs::LogOptions;
use vk_domain::stats;
use vk_ports::{AccessReview, PodIndex};

use super::auth::guard;
use super::{Kubelet, MetricsText, plain, provider_response, query_pairs};
use crate::{Backend, streaming};

impl<P: Backend, A: AccessReview, I: PodIndex> Kubelet<P, A, I> {
    /// The routes, with authentication and authorization in front of every one.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/pods", get(pods::<P, A, I>))
            .route("/pods/", get(pods::<P, A, I>))
            // The kubelet's path has the slash; client-go drops it (upstream virtual-kubelet's
            // own e2e suite asks for `/runningpods`): both answer.
            .route("/runningpods", get(running_pods::<P, A, I>))
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

    async fn usage(&self) -> Result<stats::Usage, Response> {
        let mut usage = self.provider.usage().await.map_err(provider_response)?;
        // The one lock policy (ARCHITECTURE.md): a poisoned lock is taken as it is.
        self.cpu.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fill(&mut usage);
        Ok(usage)
    }
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
            // A followed log ends (cleanly) when the drain ends the streams; a plain read is an
            // answer, finished within the drain.
            let stream = if opts.follow {
                futures::StreamExt::boxed(futures::StreamExt::take_until(
                    stream,
                    k.open.streams_closed(),
                ))
            } else {
                futures::StreamExt::boxed(stream)
            };
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use axum::http::Method;

    use super::super::fixtures::{Index, Provider, Reviews, call, kubelet};
    use super::super::{Kubelet, MetricsText, ServingCert, Settings};

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

    /// The plain routes answer with and without a trailing slash, as clients send them.
    #[tokio::test]
    async fn plain_routes_answer_with_and_without_the_slash() {
        let (k, _) = kubelet(false);
        for path in ["/pods", "/runningpods", "/stats/summary"] {
            let bare = call(&k, Method::GET, path, None, Some("cert-user")).await;
            let slashed = call(&k, Method::GET, &format!("{path}/"), None, Some("cert-user")).await;
            assert_ne!(bare.0, 404, "{path}: {}", bare.1);
            assert_eq!(bare, slashed, "{path} and {path}/");
        }
        assert_eq!(call(&k, Method::GET, "/runningpods", None, Some("cert-user")).await.0, 200);
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
        // An ephemeral container never ran here: its log (what `kubectl debug` asks for when it
        // finds it terminated) and exec say why.
        for path in ["/containerLogs/ns/web/debugger", "/exec/ns/web/debugger?command=sh&output=1"]
        {
            let (s, body) = get(path).await;
            assert_eq!(s, 400, "{path}: {body}");
            assert!(body.contains(vk_domain::status::EPHEMERAL_UNSUPPORTED), "{path}: {body}");
        }
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
}
