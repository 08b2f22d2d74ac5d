//! A `grpc.health.v1` health server for the gRPC probe tests: plain-text HTTP/2 on a loopback
//! port, answering `Health/Check` for one service with a status the test sets, as grpc-go does
//! (`NOT_FOUND` for another service, `UNIMPLEMENTED` for another method).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// `ServingStatus.SERVING`.
pub const SERVING: i32 = 1;
/// `ServingStatus.NOT_SERVING`.
pub const NOT_SERVING: i32 = 2;

/// A running health server; stopped when dropped.
#[derive(Debug)]
pub struct HealthServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The status it answers for its service.
    pub status: Arc<AtomicI32>,
    /// The checks it answered.
    pub checks: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthServer {
    /// Serves service `service` on a free port of 127.0.0.1, `SERVING` at first.
    ///
    /// # Errors
    /// No port can be bound.
    pub async fn start(service: &'static str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let status = Arc::new(AtomicI32::new(SERVING));
        let checks = Arc::new(AtomicUsize::new(0));
        let (s, c) = (Arc::clone(&status), Arc::clone(&checks));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, c) = (Arc::clone(&s), Arc::clone(&c));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (s, c) = (Arc::clone(&s), Arc::clone(&c));
                        async move { Ok::<_, Infallible>(answer(req, service, &s, &c).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Self { port, status, checks, task })
    }

    /// Answers `status` from now on.
    pub fn set(&self, status: i32) {
        self.status.store(status, Ordering::Relaxed);
    }
}

type Body = Either<
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>,
    Full<Bytes>,
>;

async fn answer(
    req: Request<Incoming>,
    service: &str,
    status: &AtomicI32,
    checks: &AtomicUsize,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // HealthCheckRequest { service = 1 }, one uncompressed gRPC message.
    let asked = body.get(5..).and_then(|m| match m {
        [] => Some(String::new()),
        [0x0a, len, rest @ ..] if rest.len() == usize::from(*len) => {
            Some(String::from_utf8_lossy(rest).into_owned())
        }
        _ => None,
    });
    // A trailers-only answer: the gRPC status in the headers.
    let only = |code: &'static str, msg: &'static str| {
        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
        let h = r.headers_mut();
        h.insert("content-type", hyper::header::HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", hyper::header::HeaderValue::from_static(code));
        h.insert("grpc-message", hyper::header::HeaderValue::from_static(msg));
        r
    };
    if path != "/grpc.health.v1.Health/Check" {
        return only("12", "unknown method");
    }
    if asked.as_deref() != Some(service) {
        return only("5", "unknown%20service");
    }
    checks.fetch_add(1, Ordering::Relaxed);
    let st = u8::try_from(status.load(Ordering::Relaxed)).unwrap_or(0);
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, st]))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Either::Left(StreamBody::new(futures::stream::iter(frames))))
        .unwrap_or_else(|_| only("13", "internal"))
}
