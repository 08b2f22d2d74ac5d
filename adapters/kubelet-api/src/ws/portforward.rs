//! Port-forward over a WebSocket (kubelet `cri/streaming/portforward/websocket.go`): the ports
//! from the query, two channels per port (data both ways, errors to the client), each port dialled
//! through the backend and copied both ways.

use std::future::Future;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use vk_ports::{Duplex, ProviderError};

use super::channel::{Decoded, Protocol, decode, encode, payload};
use super::{BUFFER, GRACE, close_normal};

/// The most ports one port-forward session can carry: two channels each, and channel 255 is
/// reserved (conn.go), so ports 0..=126 use channels 0..=253.
pub const MAX_PORTS: usize = 127;
/// Bytes read from a forwarded port per message.
const READ_CHUNK: usize = 32 * 1024;

/// Reads the ports of a WebSocket port-forward request from its decoded query pairs, as
/// portforward `websocket.go` `NewV4Options`: every `port` parameter, each a comma-separated
/// list of ports 1–65535, in order (duplicates kept).
///
/// # Errors
/// A message for a 400 answer when there is no `port` parameter, one is empty, a port is not a
/// number in 1–65535, or there are more than [`MAX_PORTS`].
pub fn ports_from_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    let mut seen = false;
    for (_, value) in pairs.into_iter().filter(|(k, _)| *k == "port") {
        seen = true;
        if value.is_empty() {
            return Err(r#"query parameter "port" cannot be empty"#.into());
        }
        for p in value.split(',') {
            let port: u16 =
                p.parse().map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {value:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    if !seen {
        return Err(r#"query parameter "port" is required"#.into());
    }
    if ports.len() > MAX_PORTS {
        return Err(format!("at most {MAX_PORTS} ports can be forwarded at once"));
    }
    Ok(ports)
}

/// Serves port-forward over a WebSocket whose 101 answer has been sent, as portforward
/// `websocket.go`: port `ports[i]` has data channel `2i` (both ways) and error channel `2i + 1`
/// (server to client). Each channel first gets the port as two bytes, little-endian. Then every
/// port is dialled with `dial` at once; bytes go both ways until the pod side closes, and a dial
/// or copy failure is written as text on the port's error channel
/// (`error forwarding port <port>: <error>`). Client bytes on error channels or unknown channels
/// are ignored.
///
/// Returns when the client has gone, or when every port is done, after a Close frame with code
/// 1000 (and the client's Close, or 5 s). Ports beyond [`MAX_PORTS`] are ignored.
pub async fn serve_portforward<S, F, Fut>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    ports: Vec<u16>,
    dial: F,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(u16) -> Fut,
    Fut: Future<Output = Result<Duplex, ProviderError>>,
{
    let ports = &ports[..ports.len().min(MAX_PORTS)];
    let (mut sink, mut stream) = ws.split();
    for (data, &port) in data_channels().zip(ports) {
        for ch in [data, data + 1] {
            if sink.send(encode(protocol, ch, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(BUFFER);
    let mut inputs = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (data, &port) in data_channels().zip(ports) {
        let (tx, rx) = mpsc::channel(BUFFER);
        inputs.push(Some(tx));
        let ends = Ends { protocol, port, data, out: out_tx.clone() };
        forwards.push(forward_port(ends, &dial, rx));
    }
    drop(out_tx);
    let all_done = {
        let writer = async {
            while let Some(m) = out_rx.next().await {
                if sink.send(m).await.is_err() {
                    return false;
                }
            }
            true
        };
        let work = futures::future::join(writer, futures::future::join_all(forwards));
        tokio::select! {
            (written, _) = work => written,
            () = read_portforward(&mut stream, protocol, &mut inputs) => false,
        }
    };
    drop(inputs);
    if all_done && sink.send(close_normal()).await.is_ok() {
        let _ = tokio::time::timeout(GRACE, async { while stream.next().await.is_some() {} }).await;
    }
}

/// The data channels of ports 0..[`MAX_PORTS`]: 0, 2, .., 252.
fn data_channels() -> impl Iterator<Item = u8> {
    (0..=252u8).step_by(2)
}

/// One port's channels and the way to the WebSocket writer.
struct Ends {
    protocol: Protocol,
    port: u16,
    data: u8,
    out: mpsc::Sender<Message>,
}

impl Ends {
    async fn error(&mut self, e: impl std::fmt::Display) {
        let msg = format!("error forwarding port {}: {e}", self.port);
        let _ = self.out.send(encode(self.protocol, self.data + 1, msg.as_bytes())).await;
    }
}

async fn forward_port<F, Fut>(mut ends: Ends, dial: &F, mut input: mpsc::Receiver<Bytes>)
where
    F: Fn(u16) -> Fut,
    Fut: Future<Output = Result<Duplex, ProviderError>>,
{
    let conn = match dial(ends.port).await {
        Ok(c) => c,
        Err(e) => return ends.error(e).await,
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    let mut up_ends = Ends { out: ends.out.clone(), ..ends };
    let up = async {
        while let Some(b) = input.next().await {
            if let Err(e) = wr.write_all(&b).await {
                return up_ends.error(e).await;
            }
        }
        // The client has gone: tell the pod, and let it finish its side.
        let _ = wr.shutdown().await;
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    let msg = encode(ends.protocol, ends.data, &buf[..n]);
                    if ends.out.send(msg).await.is_err() {
                        return;
                    }
                }
                Err(e) => return ends.error(e).await,
            }
        }
    };
    tokio::select! {
        () = up => {},
        () = down => {},
    }
}

async fn read_portforward<S>(
    stream: &mut SplitStream<WebSocketStream<S>>,
    protocol: Protocol,
    inputs: &mut [Option<mpsc::Sender<Bytes>>],
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(msg) = stream.next().await {
        let data = match msg.map(payload) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward WebSocket read failed");
                return;
            }
        };
        match decode(protocol, data) {
            Ok(Decoded::Data { channel, payload }) if channel % 2 == 0 && !payload.is_empty() => {
                if let Some(slot) = inputs.get_mut(usize::from(channel / 2))
                    && let Some(tx) = slot
                    && tx.send(payload).await.is_err()
                {
                    *slot = None;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "ignoring an undecodable port-forward message"),
        }
    }
}
