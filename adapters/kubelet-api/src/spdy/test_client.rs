//! A minimal SPDY client for tests, built from the codec: opens streams with odd IDs, sends
//! DATA and control frames, and reads frames back, as spdystream's client side would.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::frame::{FLAG_FIN, Frame, FrameCodec, Headers};

/// How long a test waits for a frame.
const WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Client {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    decoder: FrameCodec,
    encoder: FrameCodec,
    buf: BytesMut,
    next_id: u32,
}

impl Client {
    /// A client and the server end of its connection.
    pub(crate) fn pair() -> (Self, DuplexStream) {
        let (client, server) = tokio::io::duplex(256 * 1024);
        (Self::over(client), server)
    }

    /// A client on `conn`, a connection already upgraded to SPDY/3.1.
    pub(crate) fn over(conn: DuplexStream) -> Self {
        let (rd, wr) = tokio::io::split(conn);
        Self {
            rd,
            wr,
            decoder: FrameCodec::new(),
            encoder: FrameCodec::new(),
            buf: BytesMut::new(),
            next_id: 1,
        }
    }

    pub(crate) async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out)?;
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Opens a stream with these headers and returns its ID.
    pub(crate) async fn open(&mut self, headers: &[(&str, &str)]) -> anyhow::Result<u32> {
        let stream_id = self.next_id;
        self.next_id += 2;
        let headers = headers.iter().fold(Headers::new(), |h, (n, v)| h.with(n, v));
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        })
        .await?;
        Ok(stream_id)
    }

    pub(crate) async fn data(
        &mut self,
        stream_id: u32,
        data: &[u8],
        fin: bool,
    ) -> anyhow::Result<()> {
        let flags = if fin { FLAG_FIN } else { 0 };
        self.send(Frame::Data { stream_id, flags, data: Bytes::copy_from_slice(data) }).await
    }

    /// The next frame, `None` when the server closed the connection.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                    return Ok(Some(frame));
                }
                if self.rd.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .context("no frame from the server in time")?
    }

    /// Reads until the server closes the connection, collecting what it sent.
    pub(crate) async fn collect(&mut self) -> anyhow::Result<Collected> {
        let mut c = Collected::default();
        while let Some(frame) = self.next().await? {
            c.absorb(frame)?;
        }
        Ok(c)
    }

    /// Reads everything the server sends until it closes; hangs up on GOAWAY as client-go does
    /// once it has the status.
    pub(crate) async fn collect_and_hang_up(&mut self) -> anyhow::Result<Collected> {
        let mut got = Collected::default();
        while let Some(frame) = self.next().await? {
            let goaway = matches!(frame, Frame::GoAway { .. });
            got.absorb(frame)?;
            if goaway {
                self.hang_up().await?;
            }
        }
        Ok(got)
    }

    /// Sends raw bytes, then closes the client's side of the connection.
    pub(crate) async fn hang_up_with(&mut self, raw: &[u8]) -> anyhow::Result<()> {
        self.wr.write_all(raw).await?;
        self.hang_up().await
    }

    /// Closes the client's side of the connection.
    pub(crate) async fn hang_up(&mut self) -> anyhow::Result<()> {
        self.wr.shutdown().await?;
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) data: Vec<u8>,
    pub(crate) fin: bool,
    pub(crate) reset: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub(crate) replied: Vec<u32>,
    pub(crate) streams: std::collections::BTreeMap<u32, Received>,
    pub(crate) goaway: bool,
    pub(crate) other: Vec<Frame>,
}

impl Collected {
    /// Adds a frame from the server, checking each stream was answered before its data and
    /// that nothing follows a FIN.
    pub(crate) fn absorb(&mut self, frame: Frame) -> anyhow::Result<()> {
        match frame {
            Frame::SynReply { stream_id, .. } => self.replied.push(stream_id),
            Frame::Data { stream_id, flags, data } => {
                if !self.replied.contains(&stream_id) {
                    bail!("data on stream {stream_id} before its SYN_REPLY");
                }
                let s = self.stream(stream_id);
                if s.fin {
                    bail!("data on stream {stream_id} after FIN");
                }
                s.data.extend_from_slice(&data);
                s.fin = flags & FLAG_FIN != 0;
            }
            Frame::RstStream { stream_id, .. } => self.stream(stream_id).reset = true,
            Frame::GoAway { .. } => self.goaway = true,
            other => self.other.push(other),
        }
        Ok(())
    }

    pub(crate) fn stream(&mut self, id: u32) -> &mut Received {
        self.streams.entry(id).or_default()
    }

    pub(crate) fn text(&self, id: u32) -> String {
        self.streams
            .get(&id)
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .unwrap_or_default()
    }

    pub(crate) fn finished(&self, id: u32) -> bool {
        self.streams.get(&id).is_some_and(|r| r.fin)
    }
}
