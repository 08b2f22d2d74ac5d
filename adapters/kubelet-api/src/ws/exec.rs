//! Exec and attach over a WebSocket (kubelet `cri/streaming/remotecommand/websocket.go`): the
//! channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize, a reader and a writer task per
//! session, and the [`Finisher`] that writes the closing Status.

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use vk_ports::{ExecIo, TerminalSize};

use super::channel::{
    Decoded, ERROR, Protocol, RESIZE, STDERR, STDIN, STDOUT, decode, encode, payload,
};
use super::{BUFFER, GRACE, close_normal};
use crate::remotecommand::{self, Expect, Outcome, Version};

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
    Ok((io, Finisher { version: protocol.version(), finish: finish_tx, writer, reader }))
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
