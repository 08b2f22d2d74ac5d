//! port-forward over SPDY (`portforward.k8s.io`): each connection the client forwards arrives as
//! a pair of streams, `error` and `data`, with the same `port` and `requestid` headers; the data
//! stream is copied to and from a connection to the pod's port (kubelet
//! `pkg/cri/streaming/portforward/httpstream.go`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use vk_ports::{Duplex, ProviderError};

use super::SpdyError;
use super::frame::{RST_CANCEL, RST_PROTOCOL_ERROR};
use super::session::{MAX_DATA_FRAME, Session, SpdyStream, StreamReader, StreamWriter};

/// How long half a pair waits for the other half (the kubelet's `streamCreationTimeout`).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client gets to hang up after the last forward, before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Half or all of a stream pair.
struct Pending {
    since: Instant,
    error: Option<SpdyStream>,
    data: Option<SpdyStream>,
}

/// Serves a port-forward connection on `io` (after the `101` answer that chose
/// `portforward.k8s.io`) until the client hangs up or sends GOAWAY and every forward has ended.
/// For each stream pair it calls `dial(port)` and copies bytes both ways:
///
/// - client FIN on the data stream → the write half of the pod connection is shut down;
/// - pod EOF → FIN on the data stream, then FIN on the error stream when both ways are done;
/// - `dial` failing → `error forwarding port <port>: <error>` as text on the error stream, then
///   FIN on both (kubectl prints the text);
/// - a copy failing (either side reset) → both streams reset.
///
/// Pairs are matched by `requestid` (without one, as the kubelet does for old clients: error
/// stream ID `n` pairs with data stream `n + 2`). A stream with a missing or bad `port` (not 1 to
/// 65535) or `streamtype`, a repeated half, or a half left alone for 30 s is reset.
///
/// At most `max_streams` streams are open at once (two per forwarded connection); more are
/// reset.
///
/// # Errors
/// None so far: a broken connection just ends the forwards. The `Result` leaves room for
/// connection-level failures worth reporting.
pub async fn serve_portforward<T, F, Fut>(
    io: T,
    dial: F,
    max_streams: usize,
) -> Result<(), SpdyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(u16) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Duplex, ProviderError>> + Send + 'static,
{
    let dial = Arc::new(dial);
    let (session, mut incoming) = Session::with_max_streams(io, max_streams);
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                let Some((request, is_data)) = classify(&stream) else {
                    tracing::debug!(stream_id = stream.id(), "port-forward stream without a valid port or type");
                    let _ = stream.writer().reset(RST_PROTOCOL_ERROR).await;
                    continue;
                };
                let pair = pending
                    .entry(request.clone())
                    .or_insert_with(|| Pending { since: Instant::now(), error: None, data: None });
                let slot = if is_data { &mut pair.data } else { &mut pair.error };
                if slot.is_some() {
                    let _ = stream.writer().reset(RST_PROTOCOL_ERROR).await;
                    continue;
                }
                *slot = Some(stream);
                if pair.error.is_none() || pair.data.is_none() {
                    continue;
                }
                if let Some(Pending { error: Some(error), data: Some(data), .. }) = pending.remove(&request) {
                    let dial = dial.clone();
                    forwards.spawn(async move {
                        // The data stream's port counts, as in the kubelet.
                        let port = port_of(&data).unwrap_or_default();
                        forward(error, data, port, dial.as_ref()).await;
                    });
                }
            }
            _ = tick.tick() => {
                let stale: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.elapsed() >= PAIR_TIMEOUT)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in stale {
                    if let Some(pair) = pending.remove(&key) {
                        tracing::debug!(request = %key, "port-forward stream pair incomplete; resetting");
                        for s in [pair.error, pair.data].into_iter().flatten() {
                            let _ = s.writer().reset(RST_CANCEL).await;
                        }
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    for (_, pair) in pending.drain() {
        for s in [pair.error, pair.data].into_iter().flatten() {
            let _ = s.writer().reset(RST_CANCEL).await;
        }
    }
    while forwards.join_next().await.is_some() {}
    session.close(CLOSE_GRACE).await;
    Ok(())
}

/// The stream's `port` header, if it is a port number (1-65535).
fn port_of(stream: &SpdyStream) -> Option<u16> {
    stream.headers().get("port")?.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// The pair key and whether this is the data stream, or `None` for a stream to refuse.
fn classify(stream: &SpdyStream) -> Option<(String, bool)> {
    port_of(stream)?;
    let is_data = match stream.headers().get("streamtype")? {
        "data" => true,
        "error" => false,
        _ => return None,
    };
    let request = match stream.headers().get("requestid") {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if is_data => stream.id().checked_sub(2)?.to_string(),
        _ => stream.id().to_string(),
    };
    Some((request, is_data))
}

/// Forwards one connection: dials the pod's port and copies until both directions are done.
async fn forward<F, Fut>(error: SpdyStream, data: SpdyStream, port: u16, dial: &F)
where
    F: Fn(u16) -> Fut,
    Fut: Future<Output = Result<Duplex, ProviderError>>,
{
    // The client half-closes the error stream at once; what it might send is dropped.
    let (_, _, error) = error.into_parts();
    let (_, from_client, to_client) = data.into_parts();
    let conn = match dial(port).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(port, error = %e, "port-forward dial failed");
            let message = format!("error forwarding port {port}: {e}");
            let _ = error.write(Bytes::from(message)).await;
            let _ = error.finish().await;
            let _ = to_client.finish().await;
            return;
        }
    };
    let (pod_rd, pod_wr) = tokio::io::split(conn);
    let copied =
        tokio::try_join!(client_to_pod(from_client, pod_wr), pod_to_client(pod_rd, &to_client));
    match copied {
        Ok(((), ())) => {
            let _ = error.finish().await;
        }
        Err(e) => {
            tracing::debug!(port, error = %e, "port-forward copy failed; resetting the streams");
            let _ = to_client.reset(RST_CANCEL).await;
            let _ = error.reset(RST_CANCEL).await;
        }
    }
}

/// Client data → pod; the client's FIN shuts the pod connection's write half down.
async fn client_to_pod<W: AsyncWrite + Unpin>(
    mut from: StreamReader,
    mut pod: W,
) -> Result<(), SpdyError> {
    while let Some(data) = from.recv().await {
        pod.write_all(&data).await.map_err(SpdyError::Io)?;
    }
    if from.was_reset() {
        return Err(SpdyError::Reset(from.id()));
    }
    pod.shutdown().await.map_err(SpdyError::Io)
}

/// Pod data → client; the pod's EOF sends FIN.
async fn pod_to_client<R: AsyncRead + Unpin>(
    mut pod: R,
    to: &StreamWriter,
) -> Result<(), SpdyError> {
    let mut buf = vec![0; MAX_DATA_FRAME];
    loop {
        let n = pod.read(&mut buf).await.map_err(SpdyError::Io)?;
        if n == 0 {
            return to.finish().await;
        }
        to.write(Bytes::copy_from_slice(buf.get(..n).unwrap_or_default())).await?;
    }
}
