//! Client-side rate limiting of the API server requests, as client-go's token bucket does for a
//! kubelet (`--kube-api-qps`, default 50, and `--kube-api-burst`, default 100): kube-rs has no
//! limiter of its own, so a tower layer holds every request until the bucket has a token.
//! The bucket is `governor`'s GCRA, which admits `burst` requests at once and then one every
//! `1/qps` seconds. Watches take a token when they (re)connect, not per event.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

/// Requests per second and burst; `qps <= 0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second (client-go's `QPS`).
    pub qps: f32,
    /// Requests admitted at once before `qps` applies (client-go's `Burst`); at least 1.
    pub burst: u32,
}

impl RateLimit {
    /// The limiter, or `None` when `qps` is not positive (no limit).
    fn limiter(self) -> Option<Arc<DefaultDirectRateLimiter>> {
        if !(self.qps > 0.0 && self.qps.is_finite()) {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / f64::from(self.qps));
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
        Some(Arc::new(RateLimiter::direct(quota)))
    }
}

/// A tower layer applying [`RateLimit`] to a kube client's service stack.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl RateLimitLayer {
    /// One bucket shared by every service this layer wraps.
    pub fn new(limit: RateLimit) -> Self {
        Self { limiter: limit.limiter() }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited { inner, limiter: self.limiter.clone(), wait: None, admitted: false }
    }
}

/// The service [`RateLimitLayer`] makes: ready only once the bucket gave a token for the next
/// call.
pub struct RateLimited<S> {
    inner: S,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    admitted: bool,
}

impl<S, R> Service<R> for RateLimited<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(limiter) = &self.limiter
            && !self.admitted
        {
            let wait = self.wait.get_or_insert_with(|| {
                let limiter = Arc::clone(limiter);
                Box::pin(async move { limiter.until_ready().await })
            });
            match wait.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    self.wait = None;
                    self.admitted = true;
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.admitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Echo = tower::util::ServiceFn<fn(u8) -> std::future::Ready<Result<u8, ()>>>;

    fn ready(svc: &mut RateLimited<Echo>) -> bool {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    fn echo(x: u8) -> std::future::Ready<Result<u8, ()>> {
        std::future::ready(Ok(x))
    }

    /// A burst of 3 at 1 request per second: three calls pass at once, the fourth waits.
    #[test]
    fn the_burst_passes_then_requests_wait() {
        let layer = RateLimitLayer::new(RateLimit { qps: 1.0, burst: 3 });
        let mut svc = layer.layer(tower::service_fn(echo as fn(u8) -> _));
        for i in 0..3 {
            assert!(ready(&mut svc), "call {i} is within the burst");
            drop(svc.call(i));
        }
        assert!(!ready(&mut svc), "the fourth call waits for a token");
        let mut other = layer.layer(tower::service_fn(echo as fn(u8) -> _));
        assert!(!ready(&mut other), "the bucket is shared by every service of the layer");
    }

    #[test]
    fn no_qps_means_no_limit() {
        let mut svc = RateLimitLayer::new(RateLimit { qps: 0.0, burst: 0 })
            .layer(tower::service_fn(echo as fn(u8) -> _));
        for i in 0..1000 {
            assert!(ready(&mut svc));
            drop(svc.call((i % 200) as u8));
        }
    }
}
