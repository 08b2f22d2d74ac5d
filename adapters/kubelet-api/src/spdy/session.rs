//! The server side of a SPDY/3.1 connection as moby/spdystream (`connection.go`, `stream.go`)
//! runs it for Kubernetes: streams are opened by the client only, each answered at once with an
//! empty SYN_REPLY; client PINGs are echoed; SETTINGS and WINDOW_UPDATE are ignored and no flow
//! control window is enforced (spdystream never sends WINDOW_UPDATE, so a window would stall it).
//!
//! Two tasks run per connection: a reader that decodes frames and routes them, and a writer that
//! owns the write half and the header compressor and writes frames in the order they were queued
//! (so a stream's SYN_REPLY always precedes its data, and data written before a FIN precedes it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::SpdyError;
use super::frame::{
    FLAG_FIN, Frame, FrameCodec, GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, Headers, RST_PROTOCOL_ERROR,
    RST_REFUSED_STREAM,
};

/// The largest DATA frame this side writes (32 KiB, as Go's `io.Copy` buffers on the other side).
pub const MAX_DATA_FRAME: usize = 32 * 1024;
/// How many DATA payloads wait per stream before the reader stops reading the connection (like
/// spdystream's unbuffered data channel, a stream whose consumer is slow holds back the others).
const STREAM_BUFFER: usize = 16;
/// How many opened streams wait to be accepted.
const ACCEPT_BUFFER: usize = 16;
/// How many frames wait for the writer.
const WRITE_BUFFER: usize = 64;
/// How many bytes the writer gathers before writing them out.
const WRITE_BATCH: usize = 256 * 1024;

/// What the writer task is asked to do.
enum Command {
    Frame(Frame),
    /// Answered once everything queued before has been written and flushed.
    Flush(oneshot::Sender<()>),
    /// Write what is queued, shut the write half down, stop.
    Shutdown(oneshot::Sender<()>),
}

/// What both halves of a stream know.
#[derive(Debug)]
struct StreamState {
    id: u32,
    /// The peer sent RST_STREAM.
    reset: AtomicBool,
    /// This side sent FIN or RST_STREAM.
    local_done: AtomicBool,
}

/// Streams a session holds open at once unless told otherwise ([`Session::with_max_streams`]).
pub const DEFAULT_MAX_STREAMS: usize = 256;

/// A SPDY/3.1 server connection. Created by [`Session::new`], which also returns the streams the
/// client opens; end it with [`Session::close`].
#[derive(Debug)]
pub struct Session {
    commands: mpsc::Sender<Command>,
    last_stream_id: Arc<AtomicU32>,
    reader_done: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Session {
    /// Starts serving SPDY on `io` (after the HTTP `101 Switching Protocols`; typically a hyper
    /// `Upgraded`), with a reader and a writer task spawned on the current tokio runtime (so it
    /// must be called from within one, as `tokio::spawn` requires). Returns the
    /// session and the streams the client opens, in order; the receiver ends when the client sends
    /// GOAWAY or the connection ends. Each stream has already been answered with SYN_REPLY. Dropping
    /// the receiver refuses later streams (RST_STREAM `REFUSED_STREAM`).
    pub fn new<T>(io: T) -> (Self, mpsc::Receiver<SpdyStream>)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::with_max_streams(io, DEFAULT_MAX_STREAMS)
    }

    /// As [`Session::new`], with at most `max_streams` streams open at once (held by someone,
    /// or not finished by the client); a stream beyond is reset (`REFUSED_STREAM`).
    pub fn with_max_streams<T>(io: T, max_streams: usize) -> (Self, mpsc::Receiver<SpdyStream>)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (commands, command_rx) = mpsc::channel(WRITE_BUFFER);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BUFFER);
        let (done_tx, reader_done) = watch::channel(false);
        let last_stream_id = Arc::new(AtomicU32::new(0));
        let reader = Reader {
            commands: commands.clone(),
            accept: Some(accept_tx),
            streams: HashMap::new(),
            prune_at: 64,
            max_streams: max_streams.max(1),
            last_stream_id: last_stream_id.clone(),
        };
        let reader = tokio::spawn(async move {
            reader.run(rd).await;
            let _ = done_tx.send(true);
        });
        let writer = tokio::spawn(write_loop(wr, command_rx));
        (Self { commands, last_stream_id, reader_done, reader, writer }, accept_rx)
    }

    /// Whether the client has hung up (or the connection broke, or a frame could not be decoded).
    pub fn is_closed(&self) -> bool {
        *self.reader_done.borrow()
    }

    /// Ends the connection: sends GOAWAY (last good stream = the last one the client opened), waits
    /// up to `grace` for the client to hang up (spdystream's client closes once its streams are
    /// done), then shuts the connection down. Everything written before is sent first. Streams
    /// still open see their input end and their writes fail with [`SpdyError::Closed`].
    pub async fn close(self, grace: Duration) {
        let last = self.last_stream_id.load(Ordering::Relaxed);
        let _ = self
            .commands
            .send(Command::Frame(Frame::GoAway { last_good_stream_id: last, status: GOAWAY_OK }))
            .await;
        let mut done = self.reader_done.clone();
        let _ = tokio::time::timeout(grace, done.wait_for(|d| *d)).await;
        let (ack, acked) = oneshot::channel();
        if self.commands.send(Command::Shutdown(ack)).await.is_ok() {
            let _ = tokio::time::timeout(grace.max(Duration::from_secs(1)), acked).await;
        }
        self.reader.abort();
        self.writer.abort();
    }
}

/// A stream the client opened: its headers, what the client sends on it, and a handle to send
/// back. Split it with [`SpdyStream::into_parts`] to read and write from different tasks.
#[derive(Debug)]
pub struct SpdyStream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl SpdyStream {
    /// The stream ID (odd: client-opened).
    pub fn id(&self) -> u32 {
        self.writer.id()
    }

    /// The headers of the client's SYN_STREAM (`streamtype`, `port`, `requestid`, ...).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The next payload the client sent, `None` once it half-closed the stream (FIN), reset it or
    /// the connection ended ([`StreamReader::was_reset`] tells which).
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.reader.recv().await
    }

    /// A handle to send on this stream.
    pub fn writer(&self) -> StreamWriter {
        self.writer.clone()
    }

    /// The headers, the receiving half and the sending half.
    pub fn into_parts(self) -> (Headers, StreamReader, StreamWriter) {
        (self.headers, self.reader, self.writer)
    }
}

/// The receiving half of a stream. Dropping it discards whatever the client sends later.
#[derive(Debug)]
pub struct StreamReader {
    data: mpsc::Receiver<Bytes>,
    state: Arc<StreamState>,
}

impl StreamReader {
    /// The next payload, `None` after the client's FIN or RST_STREAM or the connection's end.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.data.recv().await
    }

    /// The stream ID.
    pub fn id(&self) -> u32 {
        self.state.id
    }

    /// Whether the client reset the stream (RST_STREAM), as opposed to half-closing it.
    pub fn was_reset(&self) -> bool {
        self.state.reset.load(Ordering::Relaxed)
    }
}

/// The sending half of a stream; clones share it.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    commands: mpsc::Sender<Command>,
    state: Arc<StreamState>,
}

impl StreamWriter {
    /// The stream ID.
    pub fn id(&self) -> u32 {
        self.state.id
    }

    /// Queues `data` as DATA frames of at most [`MAX_DATA_FRAME`] bytes; waits only while the
    /// writer's queue is full. Empty data sends nothing.
    ///
    /// # Errors
    /// [`SpdyError::Reset`] after the client reset the stream, [`SpdyError::StreamClosed`] after
    /// this side sent FIN or RST_STREAM, [`SpdyError::Closed`] when the connection is gone.
    pub async fn write(&self, mut data: Bytes) -> Result<(), SpdyError> {
        self.check()?;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.send(Frame::Data { stream_id: self.id(), flags: 0, data: chunk }).await?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty DATA frame with FIN): the client reads EOF. Doing it again
    /// does nothing.
    ///
    /// # Errors
    /// [`SpdyError::Reset`] after the client reset the stream, [`SpdyError::Closed`] when the
    /// connection is gone.
    pub async fn finish(&self) -> Result<(), SpdyError> {
        if self.state.reset.load(Ordering::Relaxed) {
            return Err(SpdyError::Reset(self.id()));
        }
        if self.state.local_done.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.send(Frame::Data { stream_id: self.id(), flags: FLAG_FIN, data: Bytes::new() }).await
    }

    /// Resets the stream with RST_STREAM `status` (`RST_CANCEL`, `RST_INTERNAL_ERROR`, ...). Does
    /// nothing once the stream was reset by either side or finished by this one.
    ///
    /// # Errors
    /// [`SpdyError::Closed`] when the connection is gone.
    pub async fn reset(&self, status: u32) -> Result<(), SpdyError> {
        if self.state.reset.load(Ordering::Relaxed)
            || self.state.local_done.swap(true, Ordering::Relaxed)
        {
            return Ok(());
        }
        self.send(Frame::RstStream { stream_id: self.id(), status }).await
    }

    /// Waits until everything queued on the connection so far has been written out.
    ///
    /// # Errors
    /// [`SpdyError::Closed`] when the connection is gone.
    pub async fn flush(&self) -> Result<(), SpdyError> {
        let (ack, acked) = oneshot::channel();
        self.commands.send(Command::Flush(ack)).await.map_err(|_| SpdyError::Closed)?;
        acked.await.map_err(|_| SpdyError::Closed)
    }

    fn check(&self) -> Result<(), SpdyError> {
        if self.state.reset.load(Ordering::Relaxed) {
            return Err(SpdyError::Reset(self.id()));
        }
        if self.state.local_done.load(Ordering::Relaxed) {
            return Err(SpdyError::StreamClosed(self.id()));
        }
        Ok(())
    }

    async fn send(&self, frame: Frame) -> Result<(), SpdyError> {
        self.commands.send(Command::Frame(frame)).await.map_err(|_| SpdyError::Closed)
    }
}

/// The writer task: encodes queued frames (with the connection's one header compressor) and
/// writes them in order, batching what is queued. Stops on shutdown, on a write error, or when
/// every sender is gone.
async fn write_loop<W: AsyncWrite + Unpin>(mut io: W, mut commands: mpsc::Receiver<Command>) {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = commands.recv().await {
        let mut acks = Vec::new();
        let mut shutdown = None;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Frame(frame) => {
                    if let Err(e) = codec.encode(&frame, &mut buf) {
                        tracing::warn!(error = %e, "dropping a SPDY frame that cannot be encoded");
                    }
                }
                Command::Flush(ack) => acks.push(ack),
                Command::Shutdown(ack) => {
                    shutdown = Some(ack);
                    break;
                }
            }
            if buf.len() < WRITE_BATCH {
                next = commands.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            let written = async {
                io.write_all(&buf).await?;
                io.flush().await
            }
            .await;
            buf.clear();
            if let Err(e) = written {
                tracing::debug!(error = %e, "SPDY connection write failed");
                return;
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
        if let Some(ack) = shutdown {
            let _ = io.shutdown().await;
            let _ = ack.send(());
            return;
        }
    }
}

/// What the reader task keeps per stream.
struct Entry {
    /// Where the client's data goes; `None` once the client half-closed.
    data: Option<mpsc::Sender<Bytes>>,
    /// Gone once every handle to the stream is dropped.
    state: Weak<StreamState>,
}

/// The reader task's state.
struct Reader {
    commands: mpsc::Sender<Command>,
    /// `None` once the client sent GOAWAY or the acceptor went away.
    accept: Option<mpsc::Sender<SpdyStream>>,
    streams: HashMap<u32, Entry>,
    /// Prune finished streams when the map reaches this size.
    prune_at: usize,
    max_streams: usize,
    last_stream_id: Arc<AtomicU32>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, mut io: R) {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    buf.reserve(16 * 1024);
                    match io.read_buf(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "SPDY connection read failed");
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad SPDY frame from the client; closing the connection");
                    let last = self.last_stream_id.load(Ordering::Relaxed);
                    self.queue(Frame::GoAway {
                        last_good_stream_id: last,
                        status: GOAWAY_PROTOCOL_ERROR,
                    })
                    .await;
                    break;
                }
            };
            self.handle(frame).await;
        }
        // Streams the client did not finish see their input end.
    }

    async fn queue(&self, frame: Frame) {
        let _ = self.commands.send(Command::Frame(frame)).await;
    }

    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::SynStream { stream_id, flags, headers, .. } => {
                self.open(stream_id, flags, headers).await
            }
            Frame::Data { stream_id, flags, data } => {
                self.data(stream_id, flags & FLAG_FIN != 0, data).await
            }
            Frame::Headers { stream_id, flags, .. } if flags & FLAG_FIN != 0 => {
                self.data(stream_id, true, Bytes::new()).await;
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(state) = self.streams.remove(&stream_id).and_then(|e| e.state.upgrade())
                {
                    state.reset.store(true, Ordering::Relaxed);
                }
            }
            // Our pings are even; echo the client's (spdystream `handlePingFrame`).
            Frame::Ping { id } if id % 2 == 1 => self.queue(Frame::Ping { id }).await,
            Frame::GoAway { .. } => self.accept = None,
            // SYN_REPLY (we open no streams), SETTINGS, WINDOW_UPDATE, HEADERS without FIN, PING
            // replies.
            _ => {}
        }
    }

    async fn open(&mut self, stream_id: u32, flags: u8, headers: Headers) {
        let last = self.last_stream_id.load(Ordering::Relaxed);
        if stream_id.is_multiple_of(2) || stream_id <= last {
            tracing::debug!(stream_id, "SPDY stream ID out of order");
            self.queue(Frame::RstStream { stream_id, status: RST_PROTOCOL_ERROR }).await;
            return;
        }
        self.last_stream_id.store(stream_id, Ordering::Relaxed);
        let Some(accept) = self.accept.clone() else {
            self.queue(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await;
            return;
        };
        if self.streams.len() >= self.max_streams {
            self.streams.retain(|_, e| e.state.strong_count() > 0);
            if self.streams.len() >= self.max_streams {
                tracing::debug!(stream_id, max = self.max_streams, "too many SPDY streams open");
                self.queue(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await;
                return;
            }
        }
        // The reply goes to the writer before any handle exists, so it precedes our data.
        self.queue(Frame::SynReply { stream_id, flags: 0, headers: Headers::new() }).await;
        let state = Arc::new(StreamState {
            id: stream_id,
            reset: AtomicBool::new(false),
            local_done: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let fin = flags & FLAG_FIN != 0;
        self.prune();
        self.streams.insert(
            stream_id,
            Entry { data: if fin { None } else { Some(tx) }, state: Arc::downgrade(&state) },
        );
        let stream = SpdyStream {
            headers,
            reader: StreamReader { data: rx, state: state.clone() },
            writer: StreamWriter { commands: self.commands.clone(), state },
        };
        if accept.send(stream).await.is_err() {
            self.accept = None;
            self.streams.remove(&stream_id);
            self.queue(Frame::RstStream { stream_id, status: RST_REFUSED_STREAM }).await;
        }
    }

    async fn data(&mut self, stream_id: u32, fin: bool, mut data: Bytes) {
        // Data for unknown or finished streams is dropped, as spdystream does.
        let Some(entry) = self.streams.get_mut(&stream_id) else { return };
        // In pieces, so a stream's buffer holds at most STREAM_BUFFER * MAX_DATA_FRAME bytes more
        // than the frame being read, however large the client's frames (up to 16 MiB).
        while let Some(tx) = &entry.data
            && !data.is_empty()
        {
            let piece = data.split_to(data.len().min(MAX_DATA_FRAME));
            if tx.send(piece).await.is_err() {
                // Nobody reads this stream any more: drop what comes.
                entry.data = None;
            }
        }
        if fin {
            entry.data = None;
        }
    }

    /// Forgets streams the client finished and nobody holds any more, once the map has doubled.
    fn prune(&mut self) {
        if self.streams.len() < self.prune_at {
            return;
        }
        // Whoever holds a handle holds the state; with none left nobody can read or write.
        self.streams.retain(|_, e| e.state.strong_count() > 0);
        self.prune_at = (self.streams.len() * 2).max(64);
    }
}
