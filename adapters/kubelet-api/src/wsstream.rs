//! The server side of Kubernetes' WebSocket channel protocols, for exec, attach and port-forward
//! requests the API server passes through unchanged (apimachinery
//! `pkg/util/httpstream/wsstream/conn.go`; kubelet `cri/streaming/remotecommand/websocket.go` and
//! `cri/streaming/portforward/websocket.go`).
//!
//! Every message carries one channel. Binary protocols (`channel.k8s.io`, `v4.channel.k8s.io`,
//! `v5.channel.k8s.io`, and no subprotocol at all) prefix the payload with the channel byte;
//! base64 protocols (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`) send a text message whose
//! first character is `'0' + channel`, followed by the payload in standard base64. v5 adds one
//! client message, `[0xFF, channel]`, that half-closes a channel (stdin).
//!
//! The HTTP side (the 101 answer with the negotiated `Sec-WebSocket-Protocol`) is the caller's:
//! it calls [`offered_protocols`] and [`negotiate`], answers, and hands the upgraded connection
//! over as a `WebSocketStream` (`WebSocketStream::from_raw_socket(io, Role::Server, None)`).
//! [`serve_remotecommand`] and [`serve_portforward`] then speak the channels; [`encode`] and
//! [`decode`] are the pure codec underneath.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use vk_ports::{Duplex, ExecIo, ProviderError, TerminalSize};

use super::remotecommand::{self, Expect, Outcome, Version};

/// Channel 0: the client's stdin.
pub const STDIN: u8 = 0;
/// Channel 1: the command's stdout.
pub const STDOUT: u8 = 1;
/// Channel 2: the command's stderr.
pub const STDERR: u8 = 2;
/// Channel 3: the error channel, always open; the session's Status goes there at the end.
pub const ERROR: u8 = 3;
/// Channel 4: terminal resize messages from the client (JSON `{"Width":..,"Height":..}`).
pub const RESIZE: u8 = 4;
/// The v5 channel byte that marks a stream-close message (`remotecommand.StreamClose`).
pub const STREAM_CLOSE: u8 = 0xFF;

/// The most ports one port-forward session can carry: two channels each, and channel 255 is
/// reserved (conn.go), so ports 0..=126 use channels 0..=253.
pub const MAX_PORTS: usize = 127;

/// Messages buffered per direction and stream before a slow side slows the other down.
const BUFFER: usize = 16;
/// Bytes read from a forwarded port per message.
const READ_CHUNK: usize = 32 * 1024;
/// How long the end of a session waits for output still in flight, and then for the client to
/// answer the Close frame.
const GRACE: Duration = Duration::from_secs(5);

/// What a WebSocket serves, which decides the subprotocols it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exec and attach (remotecommand `websocket.go`).
    RemoteCommand,
    /// Port-forward (portforward `websocket.go`).
    PortForward,
}

/// A negotiated channel protocol: its name, the remote-command version it stands for, and its
/// encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    name: &'static str,
    version: Version,
    base64: bool,
}

impl Protocol {
    /// The value of `Sec-WebSocket-Protocol` in the 101 answer, or `None` when the client offered
    /// no subprotocol (conn.go's `""` entry), in which case the answer carries no such header.
    pub fn name(self) -> Option<&'static str> {
        (!self.name.is_empty()).then_some(self.name)
    }

    /// The remote-command version: V1 for `channel.k8s.io`, `base64.channel.k8s.io` and the empty
    /// protocol (the error channel carries text), V4 for the `v4.` names (a JSON Status), V5 for
    /// `v5.channel.k8s.io`. Port-forward ignores it.
    pub fn version(self) -> Version {
        self.version
    }

    /// Whether messages are text, channel character then base64 (`base64.` names), rather than
    /// binary, channel byte then raw payload.
    pub fn is_base64(self) -> bool {
        self.base64
    }

    /// Whether the client may half-close a channel with `[0xFF, channel]` (v5).
    pub fn has_stream_close(self) -> bool {
        self.version >= Version::V5
    }
}

const fn proto(name: &'static str, version: Version, base64: bool) -> Protocol {
    Protocol { name, version, base64 }
}

/// What the client gets when it offers no subprotocol: binary, version 1.
const NONE: Protocol = proto("", Version::V1, false);

/// Remote-command subprotocols: the kubelet's four (`websocket.go`) plus v5, which a kubelet
/// serves once it declares `ExtendWebSocketsToKubelet`. v2 and v3 exist only over SPDY.
const REMOTE_COMMAND: [Protocol; 5] = [
    proto("v5.channel.k8s.io", Version::V5, false),
    proto("v4.channel.k8s.io", Version::V4, false),
    proto("v4.base64.channel.k8s.io", Version::V4, true),
    proto("channel.k8s.io", Version::V1, false),
    proto("base64.channel.k8s.io", Version::V1, true),
];

/// Port-forward subprotocols, exactly the kubelet's (portforward `websocket.go`): the v4 pair.
/// `SPDY/3.1+portforward.k8s.io` (the tunnel) is SPDY's business, not this module's.
const PORT_FORWARD: [Protocol; 2] = [
    proto("v4.channel.k8s.io", Version::V4, false),
    proto("v4.base64.channel.k8s.io", Version::V4, true),
];

/// Splits the values of the client's `Sec-WebSocket-Protocol` header(s), in order: each value is
/// a comma-separated list; names are trimmed and empty ones dropped.
pub fn offered_protocols<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// Picks the protocol for `offered` (from [`offered_protocols`]) as conn.go's `handshake` does:
/// the first name in the client's order that `kind` supports, compared exactly. No name offered
/// means the empty protocol (binary, version 1, no `Sec-WebSocket-Protocol` in the answer).
/// `None` when names were offered but none is supported: refuse the upgrade (the kubelet's
/// `x/net/websocket` server answers 403).
pub fn negotiate(offered: &[&str], kind: Kind) -> Option<Protocol> {
    if offered.is_empty() {
        return Some(NONE);
    }
    let supported: &[Protocol] = match kind {
        Kind::RemoteCommand => &REMOTE_COMMAND,
        Kind::PortForward => &PORT_FORWARD,
    };
    offered.iter().find_map(|o| supported.iter().find(|p| p.name == *o).copied())
}

/// One message from the client, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Bytes for a channel (possibly none: a message holding only the channel).
    Data {
        /// The channel number.
        channel: u8,
        /// The payload, base64-decoded for base64 protocols.
        payload: Bytes,
    },
    /// v5: the client will send nothing more on this channel.
    Close {
        /// The channel closed.
        channel: u8,
    },
    /// An empty message, which conn.go skips.
    Empty,
}

/// Why a client message could not be decoded. conn.go logs these and goes on reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A base64 message whose first character is below `'0'`, so it names no channel.
    #[error("invalid channel character {0:#04x}")]
    BadChannel(u8),
    /// A base64 message whose payload is not standard padded base64.
    #[error("invalid base64 payload")]
    BadBase64,
    /// A v5 stream-close message without the channel to close.
    #[error("stream-close message without a channel")]
    ShortClose,
}

/// Encodes `payload` for `channel` (conn.go `write`): binary protocols give a binary message
/// `[channel, payload..]`; base64 protocols give a text message with the character
/// `'0' + channel` (as Go's `string(rune)`, so channels from 80 up are multi-byte characters)
/// followed by the standard base64 of the payload.
pub fn encode(protocol: Protocol, channel: u8, payload: &[u8]) -> Message {
    if protocol.base64 {
        let mut text = String::with_capacity(1 + payload.len().div_ceil(3) * 4);
        text.push(char::from_u32(u32::from(b'0') + u32::from(channel)).unwrap_or('0'));
        STANDARD.encode_string(payload, &mut text);
        Message::text(text)
    } else {
        let mut frame = Vec::with_capacity(payload.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(payload);
        Message::binary(frame)
    }
}

/// Decodes the payload of a client text or binary message (conn.go `handle`, which reads both
/// kinds alike). The first byte is the channel (base64: minus `'0'`); for v5 a first byte of 0xFF
/// makes a [`Decoded::Close`] of the channel in the second byte. Channel numbers are not checked
/// against the session's channels: callers ignore the ones they do not serve, as conn.go does.
///
/// # Errors
/// [`DecodeError`] for a base64 message with a bad channel character or payload, or a v5
/// stream-close message without its channel.
pub fn decode(protocol: Protocol, msg: Bytes) -> Result<Decoded, DecodeError> {
    let Some(&first) = msg.first() else {
        return Ok(Decoded::Empty);
    };
    if protocol.base64 {
        let channel = first.checked_sub(b'0').ok_or(DecodeError::BadChannel(first))?;
        let payload = STANDARD.decode(&msg[1..]).map_err(|_| DecodeError::BadBase64)?;
        return Ok(Decoded::Data { channel, payload: payload.into() });
    }
    if first == STREAM_CLOSE && protocol.has_stream_close() {
        let channel = *msg.get(1).ok_or(DecodeError::ShortClose)?;
        return Ok(Decoded::Close { channel });
    }
    Ok(Decoded::Data { channel: first, payload: msg.slice(1..) })
}

/// Fuzzing entry: decodes `data` with every protocol either kind accepts. Never panics.
pub fn fuzz_decode(data: &[u8]) {
    let msg = Bytes::copy_from_slice(data);
    for p in REMOTE_COMMAND.iter().chain(&PORT_FORWARD).chain([&NONE]) {
        let _ = decode(*p, msg.clone());
    }
}

/// The payload of a data message; `None` for control messages.
fn payload(msg: Message) -> Option<Bytes> {
    match msg {
        Message::Binary(b) => Some(b),
        Message::Text(t) => Some(t.into()),
        _ => None,
    }
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

/// Ends a session from the server side: once the output streams of the [`ExecIo`] are done
/// (all senders dropped, or nothing new for 5 s), writes the Status on the error channel and a
/// Close frame with code 1000, then waits up to 5 s for the client's Close.
///
/// Dropping it without [`Finisher::finish`] closes the same way without a Status.
#[derive(Debug)]
pub struct Finisher {
    version: Version,
    finish: oneshot::Sender<Option<Vec<u8>>>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl Finisher {
    /// Writes the end of the session for `outcome`: `remotecommand::status_message` on channel 3
    /// (a JSON Status for v4 and v5, text before, nothing for success before v4), after every
    /// byte of stdout and stderr, then Close 1000. Returns once the connection is closed or the
    /// client has gone.
    pub async fn finish(self, outcome: &Outcome) {
        let _ = self.finish.send(remotecommand::status_message(self.version, outcome));
        let _ = self.writer.await;
        let mut reader = self.reader;
        if tokio::time::timeout(GRACE, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

/// Serves exec or attach over a WebSocket whose 101 answer has been sent, with the channels of
/// remotecommand `websocket.go`: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.
///
/// Sends at once an empty message on the lowest writable channel (stdout, else stderr, else
/// error) to tell the client the session is up, then returns the [`ExecIo`] to hand to the
/// backend and the [`Finisher`] to end the session with. Streams not in `expect` are `None` and
/// their channels are ignored; resize messages (JSON, one per message) reach `resize` with `tty`.
/// Stdin ends when the client sends a v5 close for channel 0 or closes the WebSocket; the output
/// senders fail once the client has gone. Pings are answered while the session lasts.
///
/// # Errors
/// The WebSocket error when the first message cannot be sent (the client has gone).
pub async fn serve_remotecommand<S>(
    mut ws: WebSocketStream<S>,
    protocol: Protocol,
    expect: Expect,
) -> Result<(ExecIo, Finisher), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first = if expect.stdout {
        STDOUT
    } else if expect.stderr {
        STDERR
    } else {
        ERROR
    };
    ws.send(encode(protocol, first, &[])).await?;
    let (sink, stream) = ws.split();

    let (stdin_tx, stdin_rx) = split_opt(expect.stdin.then(|| mpsc::channel(BUFFER)));
    let (resize_tx, resize_rx) = split_opt(expect.tty.then(|| mpsc::channel(BUFFER)));
    let (stdout_tx, stdout_rx) = split_opt(expect.stdout.then(|| mpsc::channel(BUFFER)));
    let (stderr_tx, stderr_rx) = split_opt(expect.stderr.then(|| mpsc::channel(BUFFER)));
    let output = futures::stream::select(
        tagged(STDOUT, stdout_rx).boxed(),
        tagged(STDERR, stderr_rx).boxed(),
    );

    let (finish_tx, finish_rx) = oneshot::channel();
    let (gone_tx, gone_rx) = oneshot::channel();
    let reader = tokio::spawn(read_remotecommand(stream, protocol, stdin_tx, resize_tx, gone_tx));
    let writer = tokio::spawn(write_remotecommand(sink, protocol, output, finish_rx, gone_rx));
    let io = ExecIo {
        stdin: stdin_rx,
        stdout: stdout_tx,
        stderr: stderr_tx,
        tty: expect.tty,
        resize: resize_rx,
    };
    Ok((io, Finisher { version: protocol.version, finish: finish_tx, writer, reader }))
}

fn split_opt<A, B>(pair: Option<(A, B)>) -> (Option<A>, Option<B>) {
    pair.map_or((None, None), |(a, b)| (Some(a), Some(b)))
}

/// A receiver's items tagged with their channel; nothing (ended) for a stream not asked for.
fn tagged(
    channel: u8,
    rx: Option<mpsc::Receiver<Bytes>>,
) -> impl Stream<Item = (u8, Bytes)> + Send + 'static {
    futures::stream::iter(rx).flatten().map(move |b| (channel, b))
}

async fn read_remotecommand<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    protocol: Protocol,
    mut stdin: Option<mpsc::Sender<Bytes>>,
    mut resize: Option<mpsc::Sender<TerminalSize>>,
    gone: oneshot::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Reading goes on after stdin ends, so pings keep being answered and the close handshake
    // completes; the stream ends once the connection is closed.
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(Message::Close(_)) => {
                stdin = None;
                continue;
            }
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "exec WebSocket read failed");
                break;
            }
        };
        let Some(data) = payload(msg) else { continue };
        match decode(protocol, data) {
            Ok(Decoded::Data { channel: STDIN, payload }) if !payload.is_empty() => {
                if let Some(tx) = &mut stdin
                    && tx.send(payload).await.is_err()
                {
                    stdin = None;
                }
            }
            Ok(Decoded::Data { channel: RESIZE, payload }) => {
                match (remotecommand::parse_resize(&payload), &mut resize) {
                    (Some(size), Some(tx)) => {
                        if tx.send(size).await.is_err() {
                            resize = None;
                        }
                    }
                    (None, _) => tracing::debug!("ignoring a malformed resize message"),
                    (Some(_), None) => {}
                }
            }
            Ok(Decoded::Close { channel: STDIN }) => stdin = None,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "ignoring an undecodable exec message"),
        }
    }
    drop((stdin, resize));
    let _ = gone.send(());
}

async fn write_remotecommand<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    protocol: Protocol,
    mut output: impl Stream<Item = (u8, Bytes)> + Unpin,
    mut finish: oneshot::Receiver<Option<Vec<u8>>>,
    mut gone: oneshot::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut output_done = false;
    let status = loop {
        tokio::select! {
            biased;
            item = output.next(), if !output_done => match item {
                Some((_, b)) if b.is_empty() => {}
                Some((ch, b)) => {
                    if sink.send(encode(protocol, ch, &b)).await.is_err() {
                        return;
                    }
                }
                None => output_done = true,
            },
            status = &mut finish => break status.ok().flatten(),
            _ = &mut gone => return,
        }
    };
    // The command has ended: what it wrote is still queued (or, if a sender outlived it, comes
    // soon); send all of it before the Status.
    while !output_done {
        match tokio::time::timeout(GRACE, output.next()).await {
            Ok(Some((ch, b))) => {
                if !b.is_empty() && sink.send(encode(protocol, ch, &b)).await.is_err() {
                    return;
                }
            }
            Ok(None) | Err(_) => output_done = true,
        }
    }
    if let Some(status) = status
        && sink.send(encode(protocol, ERROR, &status)).await.is_err()
    {
        return;
    }
    let _ = sink.send(close_normal()).await;
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn rc(offered: &[&str]) -> Option<&'static str> {
        negotiate(offered, Kind::RemoteCommand).map(|p| p.name().unwrap_or("<none>"))
    }

    #[test]
    fn negotiation_follows_the_client_order() {
        assert_eq!(rc(&["v5.channel.k8s.io", "v4.channel.k8s.io"]), Some("v5.channel.k8s.io"));
        assert_eq!(rc(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), Some("v4.channel.k8s.io"));
        assert_eq!(
            rc(&["nope", "base64.channel.k8s.io", "channel.k8s.io"]),
            Some("base64.channel.k8s.io")
        );
        assert_eq!(rc(&["v4.base64.channel.k8s.io"]), Some("v4.base64.channel.k8s.io"));
        assert_eq!(rc(&["SPDY/3.1+portforward.k8s.io"]), None);
        assert_eq!(rc(&["v3.channel.k8s.io"]), None);
        let none = negotiate(&[], Kind::RemoteCommand);
        assert_eq!(
            none.map(|p| (p.name(), p.version(), p.is_base64())),
            Some((None, Version::V1, false))
        );

        let pf = |o: &[&str]| negotiate(o, Kind::PortForward).map(|p| p.name());
        assert_eq!(
            pf(&["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Some("v4.channel.k8s.io"))
        );
        assert_eq!(pf(&["v4.base64.channel.k8s.io"]), Some(Some("v4.base64.channel.k8s.io")));
        assert_eq!(pf(&["channel.k8s.io", "portforward.k8s.io"]), None);
        assert_eq!(pf(&[]), Some(None));

        let v4 = negotiate(&["v4.channel.k8s.io"], Kind::RemoteCommand);
        assert!(v4.is_some_and(|p| p.version() == Version::V4 && !p.has_stream_close()));
        let v5 = negotiate(&["v5.channel.k8s.io"], Kind::RemoteCommand);
        assert!(v5.is_some_and(Protocol::has_stream_close));
    }

    #[test]
    fn header_values_are_split_and_trimmed() {
        let offered =
            offered_protocols(["v5.channel.k8s.io, v4.channel.k8s.io", " ,channel.k8s.io"]);
        assert_eq!(offered, ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"]);
        assert!(offered_protocols(["", " "]).is_empty());
    }

    fn by_name(name: &str) -> Protocol {
        negotiate(&[name], Kind::RemoteCommand).unwrap()
    }

    fn raw(msg: Message) -> Bytes {
        payload(msg).unwrap()
    }

    #[test]
    fn binary_codec_round_trips() {
        let p = by_name("v4.channel.k8s.io");
        let msg = encode(p, 1, b"hello");
        assert_eq!(msg, Message::binary(b"\x01hello".to_vec()));
        assert_eq!(
            decode(p, raw(msg)),
            Ok(Decoded::Data { channel: 1, payload: Bytes::from_static(b"hello") })
        );
        assert_eq!(encode(p, 3, &[]), Message::binary(vec![3]));
        assert_eq!(decode(p, Bytes::new()), Ok(Decoded::Empty));
        // 0xFF is only a close before v5 channel numbers run out.
        assert_eq!(
            decode(p, Bytes::from_static(&[0xFF, 0])),
            Ok(Decoded::Data { channel: 0xFF, payload: Bytes::from_static(&[0]) })
        );
    }

    #[test]
    fn base64_codec_round_trips() {
        let p = by_name("base64.channel.k8s.io");
        // conn.go's own example: "\n" on stdout is "1Cg==".
        assert_eq!(encode(p, 1, b"\n"), Message::text("1Cg=="));
        assert_eq!(encode(p, 3, &[]), Message::text("3"));
        assert_eq!(
            decode(p, Bytes::from_static(b"0Zm9vCg==")),
            Ok(Decoded::Data { channel: 0, payload: Bytes::from_static(b"foo\n") })
        );
        for ch in [0, 4, 79, 80, 200, 255] {
            let data: Vec<u8> = (0..=255).collect();
            let msg = encode(p, ch, &data);
            if ch < 80 {
                assert_eq!(
                    decode(p, raw(msg)),
                    Ok(Decoded::Data { channel: ch, payload: data.into() })
                );
            } else {
                // Like Go, channels from 80 up are not single characters and do not round-trip.
                assert!(matches!(msg, Message::Text(_)));
            }
        }
        assert_eq!(decode(p, Bytes::from_static(b"0!!")), Err(DecodeError::BadBase64));
        assert_eq!(decode(p, Bytes::from_static(b"/Zg==")), Err(DecodeError::BadChannel(b'/')));
    }

    #[test]
    fn v5_close_messages() {
        let p = by_name("v5.channel.k8s.io");
        assert_eq!(decode(p, Bytes::from_static(&[0xFF, 0])), Ok(Decoded::Close { channel: 0 }));
        assert_eq!(decode(p, Bytes::from_static(&[0xFF])), Err(DecodeError::ShortClose));
        assert_eq!(
            decode(p, Bytes::from_static(&[0, b'x'])),
            Ok(Decoded::Data { channel: 0, payload: Bytes::from_static(b"x") })
        );
    }

    #[test]
    fn fuzz_entry_takes_anything() {
        for data in
            [&b""[..], b"\xff", b"\xff\x00", b"0", b"\x00\xff\xfe", b"9====", "\u{80}x".as_bytes()]
        {
            fuzz_decode(data);
        }
    }

    #[test]
    fn ports_from_the_query() {
        let q = |pairs: &[(&'static str, &'static str)]| ports_from_query(pairs.iter().copied());
        assert_eq!(q(&[("port", "80,1234")]), Ok(vec![80, 1234]));
        assert_eq!(q(&[("port", "80"), ("x", "1"), ("port", "443,80")]), Ok(vec![80, 443, 80]));
        assert!(q(&[]).is_err_and(|e| e.contains("required")));
        assert!(q(&[("port", "")]).is_err_and(|e| e.contains("empty")));
        assert!(q(&[("port", "0")]).is_err_and(|e| e.contains("> 0")));
        assert!(q(&[("port", "65536")]).is_err_and(|e| e.contains("unable to parse")));
        assert!(q(&[("port", "80, 81")]).is_err());
        let many = vec!["1"; MAX_PORTS + 1].join(",");
        assert!(ports_from_query([("port", many.as_str())]).is_err());
    }

    async fn pair() -> (WebSocketStream<DuplexStream>, WebSocketStream<DuplexStream>) {
        let (s, c) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(s, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(c, Role::Client, None).await;
        (server, client)
    }

    /// The next data or close message the client gets (pongs are skipped).
    async fn next(client: &mut WebSocketStream<DuplexStream>) -> Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
            match m.unwrap().unwrap().unwrap() {
                Message::Pong(_) => {}
                m => return m,
            }
        }
    }

    async fn expect_close(client: &mut WebSocketStream<DuplexStream>) {
        match next(client).await {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
            m => panic!("expected Close 1000, got {m:?}"),
        }
        // The client's reply completes the handshake and the stream ends.
        assert!(client.next().await.is_none());
    }

    fn status_of(msg: Message, p: Protocol) -> serde_json::Value {
        match decode(p, raw(msg)).unwrap() {
            Decoded::Data { channel: ERROR, payload } => serde_json::from_slice(&payload).unwrap(),
            d => panic!("expected the error channel, got {d:?}"),
        }
    }

    /// A fake command: echoes one stdin chunk (or, with `until_eof`, all of stdin and then
    /// "eof") to stdout and exits with `code`.
    async fn echo(mut io: ExecIo, until_eof: bool) -> ExecIo {
        let mut stdin = io.stdin.take().unwrap();
        let stdout = io.stdout.as_mut().unwrap();
        while let Some(b) = stdin.next().await {
            stdout.send(b).await.unwrap();
            if !until_eof {
                return io;
            }
        }
        stdout.send(Bytes::from_static(b"eof")).await.unwrap();
        io
    }

    #[tokio::test]
    async fn exec_over_v4_binary() {
        let (server, mut client) = pair().await;
        let p = by_name("v4.channel.k8s.io");
        let expect = Expect { stdin: true, stdout: true, stderr: true, tty: false };
        let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
        assert!(io.resize.is_none() && io.stderr.is_some());
        let cmd = tokio::spawn(async move {
            drop(echo(io, false).await);
            fin.finish(&Outcome::Exited(3)).await;
        });
        assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
        client.send(Message::Ping(Bytes::from_static(b"hi"))).await.unwrap();
        client.send(encode(p, STDIN, b"hello")).await.unwrap();
        assert_eq!(next(&mut client).await, encode(p, STDOUT, b"hello"));
        let status = status_of(next(&mut client).await, p);
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        expect_close(&mut client).await;
        cmd.await.unwrap();
    }

    #[tokio::test]
    async fn pings_are_answered() {
        let (server, mut client) = pair().await;
        let expect = Expect { stdout: true, ..Expect::default() };
        let (_io, _fin) = serve_remotecommand(server, NONE, expect).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), Message::binary(vec![STDOUT]));
        client.send(Message::Ping(Bytes::from_static(b"x"))).await.unwrap();
        let pong = tokio::time::timeout(Duration::from_secs(10), client.next()).await;
        assert_eq!(pong.unwrap().unwrap().unwrap(), Message::Pong(Bytes::from_static(b"x")));
    }

    #[tokio::test]
    async fn exec_over_base64() {
        let (server, mut client) = pair().await;
        let p = by_name("v4.base64.channel.k8s.io");
        let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
        let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
        let cmd = tokio::spawn(async move {
            drop(echo(io, false).await);
            fin.finish(&Outcome::Exited(0)).await;
        });
        assert_eq!(next(&mut client).await, Message::text("1"));
        client.send(Message::text("0aGk=")).await.unwrap();
        assert_eq!(next(&mut client).await, Message::text("1aGk="));
        assert_eq!(
            status_of(next(&mut client).await, p),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        expect_close(&mut client).await;
        cmd.await.unwrap();
    }

    #[tokio::test]
    async fn v1_errors_are_text_and_the_first_message_falls_back_to_the_error_channel() {
        let (server, mut client) = pair().await;
        let (io, fin) = serve_remotecommand(server, NONE, Expect::default()).await.unwrap();
        assert_eq!(next(&mut client).await, Message::binary(vec![ERROR]));
        drop(io);
        let done =
            tokio::spawn(
                async move { fin.finish(&Outcome::Failed("no such container".into())).await },
            );
        assert_eq!(next(&mut client).await, encode(NONE, ERROR, b"no such container"));
        expect_close(&mut client).await;
        done.await.unwrap();
    }

    #[tokio::test]
    async fn v5_close_ends_stdin() {
        let (server, mut client) = pair().await;
        let p = by_name("v5.channel.k8s.io");
        let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
        let (io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
        let cmd = tokio::spawn(async move {
            drop(echo(io, true).await);
            fin.finish(&Outcome::Exited(0)).await;
        });
        assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
        client.send(encode(p, STDIN, b"a")).await.unwrap();
        client.send(encode(p, STDIN, b"b")).await.unwrap();
        client.send(Message::binary(vec![STREAM_CLOSE, STDIN])).await.unwrap();
        assert_eq!(next(&mut client).await, encode(p, STDOUT, b"a"));
        assert_eq!(next(&mut client).await, encode(p, STDOUT, b"b"));
        assert_eq!(next(&mut client).await, encode(p, STDOUT, b"eof"));
        assert_eq!(status_of(next(&mut client).await, p)["status"], "Success");
        expect_close(&mut client).await;
        cmd.await.unwrap();
    }

    #[tokio::test]
    async fn websocket_close_ends_stdin_and_output() {
        let (server, mut client) = pair().await;
        let p = by_name("v4.channel.k8s.io");
        let expect = Expect { stdin: true, stdout: true, ..Expect::default() };
        let (mut io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
        assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
        client.close(None).await.unwrap();
        let mut stdin = io.stdin.take().unwrap();
        let eof = tokio::time::timeout(Duration::from_secs(10), stdin.next()).await;
        assert_eq!(eof.unwrap(), None);
        let stdout = io.stdout.as_mut().unwrap();
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if stdout.send(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
            }
        });
        failed.await.unwrap();
        fin.finish(&Outcome::Exited(0)).await;
    }

    #[tokio::test]
    async fn resize_messages_reach_the_command() {
        let (server, mut client) = pair().await;
        let p = by_name("v4.channel.k8s.io");
        let expect = Expect { stdin: true, stdout: true, tty: true, ..Expect::default() };
        let (mut io, fin) = serve_remotecommand(server, p, expect).await.unwrap();
        assert!(io.tty && io.stderr.is_none());
        assert_eq!(next(&mut client).await, Message::binary(vec![STDOUT]));
        client.send(encode(p, RESIZE, br#"{"Width":100,"Height":30}"#)).await.unwrap();
        client.send(encode(p, RESIZE, b"garbage")).await.unwrap();
        client.send(encode(p, RESIZE, br#"{"Width":80,"Height":24}"#)).await.unwrap();
        let resize = io.resize.as_mut().unwrap();
        assert_eq!(resize.next().await, Some(TerminalSize { width: 100, height: 30 }));
        assert_eq!(resize.next().await, Some(TerminalSize { width: 80, height: 24 }));
        drop(io);
        let done = tokio::spawn(async move { fin.finish(&Outcome::Exited(0)).await });
        assert_eq!(status_of(next(&mut client).await, p)["status"], "Success");
        expect_close(&mut client).await;
        done.await.unwrap();
    }

    #[tokio::test]
    async fn port_forward_to_a_tcp_echo_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = listener.local_addr().unwrap().port();
        // Echoes one read, then closes.
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(&buf[..n]).await.unwrap();
        });
        let dial = move |port: u16| async move {
            if port != echo_port {
                return Err(ProviderError::NotFound(format!("nothing listens on {port}")));
            }
            let conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
            conn.map(|c| Box::new(c) as Duplex)
                .map_err(|e| ProviderError::Unavailable { message: e.to_string(), source: None })
        };
        let (server, mut client) = pair().await;
        let p = negotiate(&["v4.channel.k8s.io"], Kind::PortForward).unwrap();
        let served = tokio::spawn(serve_portforward(server, p, vec![echo_port, 9], dial));

        let [lo, hi] = echo_port.to_le_bytes();
        for expected in [[0, lo, hi], [1, lo, hi], [2, 9, 0], [3, 9, 0]] {
            assert_eq!(next(&mut client).await, Message::binary(expected.to_vec()));
        }
        client.send(encode(p, 0, b"ping")).await.unwrap();
        let (mut echoed, mut error) = (None, None);
        while echoed.is_none() || error.is_none() {
            match decode(p, raw(next(&mut client).await)).unwrap() {
                Decoded::Data { channel: 0, payload } => echoed = Some(payload),
                Decoded::Data { channel: 3, payload } => error = Some(payload),
                d => panic!("unexpected {d:?}"),
            }
        }
        assert_eq!(echoed.as_deref(), Some(&b"ping"[..]));
        let error = String::from_utf8(error.unwrap().to_vec()).unwrap();
        assert!(error.starts_with("error forwarding port 9: not found"), "{error}");
        // Both ports are done: the server closes.
        expect_close(&mut client).await;
        tokio::time::timeout(Duration::from_secs(10), served).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn port_forward_with_the_most_ports() {
        let (server, mut client) = pair().await;
        let p = negotiate(&[], Kind::PortForward).unwrap();
        let ports: Vec<u16> = (1..=200).collect();
        let dial = |port: u16| async move { Err(ProviderError::NotFound(port.to_string())) };
        let served = tokio::spawn(serve_portforward(server, p, ports, dial));
        let mut prefixes = 0;
        let mut errors = 0;
        loop {
            match next(&mut client).await {
                Message::Binary(b) if b.len() == 3 => {
                    assert_eq!(u16::from_le_bytes([b[1], b[2]]), u16::from(b[0] / 2) + 1);
                    prefixes += 1;
                }
                Message::Binary(b) => {
                    assert!(b[0] % 2 == 1 && b[0] < 254, "{b:?}");
                    errors += 1;
                }
                Message::Close(_) => break,
                m => panic!("unexpected {m:?}"),
            }
        }
        assert_eq!((prefixes, errors), (2 * MAX_PORTS, MAX_PORTS));
        assert!(client.next().await.is_none());
        served.await.unwrap();
    }

    #[tokio::test]
    async fn port_forward_ends_when_the_client_goes() {
        let (server, mut client) = pair().await;
        let p = negotiate(&["v4.base64.channel.k8s.io"], Kind::PortForward).unwrap();
        // A pod side that stays open and silent.
        let pods = std::sync::Mutex::new(Vec::new());
        let dial = |_: u16| {
            let (a, b) = tokio::io::duplex(1024);
            pods.lock().unwrap().push(b);
            async { Ok::<_, ProviderError>(Box::new(a) as Duplex) }
        };
        let served = serve_portforward(server, p, vec![8080], dial);
        let client_side = async {
            let prefix = STANDARD.encode(8080u16.to_le_bytes());
            assert_eq!(next(&mut client).await, Message::text(format!("0{prefix}")));
            assert_eq!(next(&mut client).await, Message::text(format!("1{prefix}")));
            client.close(None).await.unwrap();
        };
        let both = futures::future::join(served, client_side);
        tokio::time::timeout(Duration::from_secs(10), both).await.unwrap();
    }
}
