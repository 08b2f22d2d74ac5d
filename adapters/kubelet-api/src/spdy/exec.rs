//! exec and attach over SPDY: the streams client-go opens (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`, named by the `streamtype` header) turned into a [`vk_ports::ExecIo`], and the Status
//! that ends the session (kubelet `pkg/cri/streaming/remotecommand/httpstream.go`).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use vk_ports::{ExecIo, TerminalSize};

use super::SpdyError;
use super::frame::{RST_PROTOCOL_ERROR, RST_REFUSED_STREAM};
use super::session::{Session, SpdyStream, StreamReader, StreamWriter};
use crate::remotecommand::{self, Expect, Outcome, Version};

/// How long the client waits for the end of the session's streams: the kubelet's default
/// `streamCreationTimeout` too.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Finisher::finish`] waits for stdout and stderr to be sent after the command ended.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client gets to hang up after the Status, before the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Payloads (stdout, stderr, stdin) buffered between the connection and the provider.
const IO_BUFFER: usize = 8;
/// The most bytes of an unfinished resize message kept (a message is ~30 bytes).
const MAX_RESIZE_PENDING: usize = 4096;

/// The streams of one exec session, as they arrive.
#[derive(Default)]
struct Streams {
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

/// Which streams the kubelet waits for: `error` always, the standard streams the query asked
/// for (never stderr with a TTY), `resize` with a TTY from v3 on.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Wanted {
    fn new(version: Version, expect: Expect) -> Self {
        Self {
            stdin: expect.stdin,
            stdout: expect.stdout,
            stderr: expect.stderr && !expect.tty,
            resize: expect.tty && version >= Version::V3,
        }
    }
}

impl Streams {
    fn complete(&self, w: Wanted) -> bool {
        self.error.is_some()
            && (!w.stdin || self.stdin.is_some())
            && (!w.stdout || self.stdout.is_some())
            && (!w.stderr || self.stderr.is_some())
            && (!w.resize || self.resize.is_some())
    }

    /// The slot for a `streamtype`, `None` for a type the session did not ask for.
    fn slot(&mut self, kind: &str, w: Wanted) -> Option<&mut Option<SpdyStream>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" if w.stdin => Some(&mut self.stdin),
            "stdout" if w.stdout => Some(&mut self.stdout),
            "stderr" if w.stderr => Some(&mut self.stderr),
            "resize" if w.resize => Some(&mut self.resize),
            _ => None,
        }
    }
}

/// Serves the SPDY side of an exec or attach request on `io` (the connection after the `101`
/// answer that chose `version`): waits up to `timeout` ([`STREAM_CREATION_TIMEOUT`] as the
/// kubelet does) for the streams `expect` implies, and returns them as an [`ExecIo`] for
/// [`vk_ports::PodStreams::exec_stream`] or `attach`, plus the [`Finisher`] that ends the
/// session.
///
/// - stdin: each DATA payload is one item; the client's FIN (stdin EOF) closes the channel.
/// - stdout, stderr: each item becomes DATA frames of at most 32 KiB; the channel closing sends FIN.
/// - resize: the client's concatenated `{"Width":..,"Height":..}` messages, however they are
///   split over DATA frames, become [`TerminalSize`] items; unparsable messages are skipped.
///
/// Streams of another or a repeated type, and streams opened after the set is complete, are
/// reset. Channels are bounded: a slow consumer slows the client down.
///
/// # Errors
/// [`SpdyError::Timeout`] when the streams do not all arrive in time, [`SpdyError::Closed`] when
/// the client hangs up first. The connection is closed in both cases.
pub async fn serve_remotecommand<T>(
    io: T,
    version: Version,
    expect: Expect,
    timeout: Duration,
) -> Result<(ExecIo, Finisher), SpdyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (session, mut incoming) = Session::new(io);
    let wanted = Wanted::new(version, expect);
    let mut got = Streams::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while !got.complete(wanted) {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                session.close(Duration::ZERO).await;
                return Err(SpdyError::Closed);
            }
            Err(_) => {
                session.close(Duration::ZERO).await;
                return Err(SpdyError::Timeout("the exec streams"));
            }
        };
        let kind = stream.headers().get("streamtype").unwrap_or_default().to_owned();
        match got.slot(&kind, wanted) {
            Some(slot) if slot.is_none() => *slot = Some(stream),
            _ => {
                tracing::debug!(streamtype = %kind, "unexpected exec stream");
                let _ = stream.writer().reset(RST_PROTOCOL_ERROR).await;
            }
        }
    }
    // The set is complete: refuse anything else (and keep the reader from waiting on us).
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            let _ = stream.writer().reset(RST_REFUSED_STREAM).await;
        }
    });

    let mut finisher = Finisher {
        session,
        version,
        error: None,
        outputs: Vec::new(),
        inputs: Vec::new(),
        others: Vec::new(),
    };
    if let Some(error) = got.error {
        let (_, reader, writer) = error.into_parts();
        finisher.inputs.push(tokio::spawn(drain(reader)));
        finisher.error = Some(writer);
    }
    let stdin = got.stdin.map(|s| {
        let (_, reader, writer) = s.into_parts();
        let (tx, rx) = mpsc::channel(IO_BUFFER);
        finisher.inputs.push(tokio::spawn(pump_stdin(reader, tx)));
        finisher.others.push(writer);
        rx
    });
    let mut output = |s: Option<SpdyStream>| {
        s.map(|s| {
            let (_, _, writer) = s.into_parts();
            let (tx, rx) = mpsc::channel(IO_BUFFER);
            finisher.outputs.push(tokio::spawn(pump_output(rx, writer)));
            tx
        })
    };
    let stdout = output(got.stdout);
    let stderr = output(got.stderr);
    let resize = got.resize.map(|s| {
        let (_, reader, writer) = s.into_parts();
        let (tx, rx) = mpsc::channel(IO_BUFFER);
        finisher.inputs.push(tokio::spawn(pump_resize(reader, tx)));
        finisher.others.push(writer);
        rx
    });
    Ok((ExecIo { stdin, stdout, stderr, tty: expect.tty, resize }, finisher))
}

/// Ends an exec session served by [`serve_remotecommand`].
#[derive(Debug)]
pub struct Finisher {
    session: Session,
    version: Version,
    error: Option<StreamWriter>,
    /// stdout and stderr: they end when the provider drops its senders.
    outputs: Vec<JoinHandle<()>>,
    /// The tasks reading the client's streams.
    inputs: Vec<JoinHandle<()>>,
    /// Streams only the client writes on (stdin, resize), finished at the end.
    others: Vec<StreamWriter>,
}

impl Finisher {
    /// Ends the session with `outcome`: waits (up to 10 s) until everything the command wrote to
    /// stdout and stderr has been queued and those streams finished (so the provider must have
    /// dropped its [`ExecIo`]), writes [`remotecommand::status_message`] on the error stream,
    /// finishes every stream, sends GOAWAY and closes the connection once the client hung up (or
    /// after 5 s).
    ///
    /// # Errors
    /// [`SpdyError::Closed`] or [`SpdyError::Reset`] when the status could not be sent because the
    /// client went away; the connection is closed anyway.
    pub async fn finish(self, outcome: &Outcome) -> Result<(), SpdyError> {
        let Self { session, version, error, outputs, inputs, others } = self;
        for output in outputs {
            let abort = output.abort_handle();
            if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, output).await.is_err() {
                tracing::debug!("exec output still held after the command ended; cutting it off");
                abort.abort();
            }
        }
        let mut result = Ok(());
        if let Some(error) = error {
            result = async {
                if let Some(status) = remotecommand::status_message(version, outcome) {
                    error.write(Bytes::from(status)).await?;
                }
                error.finish().await?;
                error.flush().await
            }
            .await;
        }
        for writer in others {
            let _ = writer.finish().await;
        }
        session.close(CLOSE_GRACE).await;
        for input in inputs {
            input.abort();
        }
        result
    }
}

/// Reads and drops what the client sends (the error stream, which client-go half-closes).
async fn drain(mut reader: StreamReader) {
    while reader.recv().await.is_some() {}
}

/// Client stdin → provider; the channel closes on the client's FIN (EOF).
async fn pump_stdin(mut reader: StreamReader, mut tx: mpsc::Sender<Bytes>) {
    while let Some(data) = reader.recv().await {
        if tx.send(data).await.is_err() {
            // The command does not read stdin any more; later data is dropped.
            return;
        }
    }
}

/// Provider stdout or stderr → the client, then FIN.
async fn pump_output(mut rx: mpsc::Receiver<Bytes>, writer: StreamWriter) {
    while let Some(data) = rx.next().await {
        if writer.write(data).await.is_err() {
            // The client went away; dropping `rx` tells the provider.
            return;
        }
    }
    let _ = writer.finish().await;
}

/// Client resize messages → terminal sizes.
async fn pump_resize(mut reader: StreamReader, mut tx: mpsc::Sender<TerminalSize>) {
    let mut pending = BytesMut::new();
    while let Some(data) = reader.recv().await {
        pending.extend_from_slice(&data);
        for size in take_resizes(&mut pending) {
            if tx.send(size).await.is_err() {
                return;
            }
        }
    }
}

/// Takes the complete JSON values off the front of `pending` and parses each as a resize
/// message ([`remotecommand::parse_resize`]), skipping those that are not one. An incomplete
/// last value stays in `pending`; garbage that is not JSON is dropped, as is anything beyond
/// 4 KiB without a complete value.
pub(crate) fn take_resizes(pending: &mut BytesMut) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut values =
        serde_json::Deserializer::from_slice(pending).into_iter::<serde::de::IgnoredAny>();
    let mut used = 0;
    loop {
        let start = values.byte_offset();
        match values.next() {
            Some(Ok(_)) => {
                let end = values.byte_offset();
                if let Some(size) = pending.get(start..end).and_then(remotecommand::parse_resize) {
                    sizes.push(size);
                }
                used = end;
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                used = pending.len();
                break;
            }
            None => {
                used = pending.len();
                break;
            }
        }
    }
    pending.advance(used.min(pending.len()));
    if pending.len() > MAX_RESIZE_PENDING {
        pending.clear();
    }
    sizes
}
