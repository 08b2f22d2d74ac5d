//! The guard in front of every route: authentication (a verified client certificate, a bearer
//! token through a TokenReview, or anonymous when enabled) and authorization (SubjectAccessReviews
//! on `nodes/<subresource>`), with the answers cached by SHA-256 for the kubelet's TTLs and the
//! reviews held to the peer's turns ([`ReviewGate`](crate::limits::ReviewGate)).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{debug, warn};
use vk_domain::kubelet_auth::{NodeAccess, UserInfo, access_for};
use vk_ports::{AccessReview, PodIndex};

use super::{Kubelet, plain};
use crate::Backend;
use crate::limits::{self, Slot};

/// Bytes each answer cache holds at most (keys and answers as weighed by [`cache`]).
const CACHE_BYTES: u64 = 16 << 20;

/// A bounded cache whose entries live `ttl` from their insertion (moka's `time_to_live`),
/// weighed in bytes: the key, moka's overhead (about 64 bytes) and `weight` of the answer.
pub(super) fn cache<V>(ttl: Duration, weight: fn(&V) -> u32) -> moka::sync::Cache<Digest, V>
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
pub(super) type Digest = [u8; 32];

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
pub(super) fn user_weight(u: &Option<UserInfo>) -> u32 {
    let strings = |v: &[String]| v.iter().map(|x| x.len() + 24).sum::<usize>();
    let n = u.as_ref().map_or(0, |u| {
        u.username.len()
            + u.uid.len()
            + strings(&u.groups)
            + u.extra.iter().map(|(k, v)| k.len() + 24 + strings(v)).sum::<usize>()
    });
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What the server knows of a connection, set per connection: who its verified client
/// certificate names, and its slot (peer address; marked authenticated by the first request
/// that authenticates).
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) cert: Option<UserInfo>,
    pub(super) slot: Slot,
}

impl<P: Backend, A: AccessReview, I: PodIndex> Kubelet<P, A, I> {
    /// The user `token` names, `None` when the API server does not authenticate it; reviewed
    /// once per [`Settings::token_ttl`](super::Settings::token_ttl).
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
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

pub(super) async fn guard<P: Backend, A: AccessReview, I: PodIndex>(
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::Method;
    use vk_ports::ClusterError;
    use vk_ports::Decision;

    use super::super::fixtures::{Index, Provider, Reviews, call, kubelet};
    use super::super::{ServingCert, Settings};
    use super::*;

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
}
