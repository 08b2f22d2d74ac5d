//! The listener: [`serve`]'s accept loop under the connection caps, one task per connection (the
//! TLS handshake, then HTTP/1.1 with upgrades), and the drain when it is told to stop ([`Open`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};
use vk_ports::{AccessReview, PodIndex};

use super::auth::Conn;
use super::tls::{tls_config, user_from_certificate};
use super::{Kubelet, ServerError};
use crate::Backend;
use crate::limits::{Connections, Limits, Slot};

/// What [`serve`] drains when it stops: every connection and streaming session runs as a task of
/// `tasks`; `draining` asks connections to finish what they answer and close (hyper's graceful
/// shutdown); `streams` ends what only its client would end (a followed log, an exec, attach or
/// port-forward session) once [`Settings::stream_drain`](super::Settings::stream_drain) has
/// passed; `closing` ends whatever is still open once [`Settings::drain`](super::Settings::drain)
/// has (linkerd2-proxy's drain, with tokio-util's `TaskTracker`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Open {
    tasks: tokio_util::task::TaskTracker,
    draining: tokio_util::sync::CancellationToken,
    streams: tokio_util::sync::CancellationToken,
    closing: tokio_util::sync::CancellationToken,
}

impl Open {
    /// Runs a streaming session (an upgraded connection) until it ends or the drain closes it.
    pub(crate) fn session(&self, session: impl Future<Output = ()> + Send + 'static) {
        let streams = self.streams.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = session => {}
                () = streams.cancelled() => debug!("streaming session closed by the shutdown"),
            }
        });
    }

    /// Resolves when the drain ends the streams that only their client would end (a followed
    /// log's body ends there, cleanly).
    pub(crate) fn streams_closed(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.streams.clone().cancelled_owned()
    }

    /// Drains: connections asked to finish; after `streams` (at most `answers`) the streams that
    /// only their client would end are ended, after `answers` everything still open is closed;
    /// returns once every task has ended.
    async fn drain(&self, answers: Duration, streams: Duration) {
        self.tasks.close();
        self.draining.cancel();
        let streams = streams.min(answers);
        if tokio::time::timeout(streams, self.tasks.wait()).await.is_ok() {
            return;
        }
        debug!(
            open = self.tasks.len(),
            ?streams,
            "ending the streams still open on the kubelet API"
        );
        self.streams.cancel();
        if tokio::time::timeout(answers - streams, self.tasks.wait()).await.is_err() {
            info!(
                open = self.tasks.len(),
                ?answers,
                "closing what is still open on the kubelet API"
            );
            self.closing.cancel();
            self.tasks.wait().await;
        }
    }
}

/// Serves `kubelet` on `listener` until `shutdown` resolves, then drains: no new connection is
/// taken, open ones finish the requests they are answering (idle keep-alive connections close at
/// once), what only its client would end (a followed log, an exec session) is ended after
/// [`Settings::stream_drain`](super::Settings::stream_drain), and whatever is still open after
/// [`Settings::drain`](super::Settings::drain) (an answer its client reads too slowly) is
/// closed. Returns once every connection and session has ended.
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
    kubelet.open.drain(kubelet.settings.drain, kubelet.settings.stream_drain).await;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::super::fixtures::{Index, Provider, Reviews};
    use super::super::{Kubelet, Settings, self_signed};
    use super::*;

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
        open.drain(Duration::from_secs(20), Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(6), "{took:?}");
        assert!(short.await.is_ok(), "the short session was cut");
        assert!(long.await.is_ok(), "the endless session was not closed");

        // With only short work the drain ends with it.
        let open = Open::default();
        open.session(tokio::time::sleep(Duration::from_secs(1)));
        let started = tokio::time::Instant::now();
        open.drain(Duration::from_secs(20), Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    /// An answer still being written when the streams are ended gets until the drain's end; one
    /// that outlasts it is closed then.
    #[tokio::test(start_paused = true)]
    async fn answers_get_the_whole_drain() {
        let open = Open::default();
        let (finished, slow) = tokio::sync::oneshot::channel();
        let closing = open.closing.clone();
        open.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(12)) => { let _ = finished.send(()); }
                () = closing.cancelled() => {}
            }
        });
        let started = tokio::time::Instant::now();
        open.drain(Duration::from_secs(20), Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(12) && took < Duration::from_secs(13), "{took:?}");
        assert!(slow.await.is_ok(), "the answer was cut at the streams' end");

        let open = Open::default();
        let closing = open.closing.clone();
        open.tasks.spawn(async move { closing.cancelled().await });
        let started = tokio::time::Instant::now();
        open.drain(Duration::from_secs(20), Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_secs(20) && took < Duration::from_secs(21), "{took:?}");
    }
}
