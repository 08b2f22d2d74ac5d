//! The SPDY/3.1 frame codec: control and DATA frames to and from bytes, and the zlib-compressed
//! header blocks (moby/spdystream `spdy/types.go`, `spdy/read.go`, `spdy/write.go`). Pure: no I/O,
//! no tasks. One [`FrameCodec`] per connection and direction, because header compression is one
//! zlib stream per direction that runs across all frames.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;
use super::dictionary::HEADER_DICTIONARY;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// Frame flag: the sender's half of the stream ends with this frame (SYN_STREAM, SYN_REPLY,
/// HEADERS, DATA).
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the receiver must not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest payload the 24-bit length field allows (16 MiB - 1).
pub const MAX_PAYLOAD: usize = 0x00FF_FFFF;
/// The largest control-frame payload accepted (1 MiB): control frames carry at most a compressed
/// header block, and client-go's are a few dozen bytes. DATA frames may use the full
/// [`MAX_PAYLOAD`].
pub const MAX_CONTROL_PAYLOAD: usize = 1 << 20;
/// The largest decompressed header block accepted (1 MiB), so a small zlib bomb cannot take the
/// memory (spdystream bounds each name and value to 1 MiB instead).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The most name/value pairs accepted in one header block (spdystream's `defaultMaxHeaderCount`).
pub const MAX_HEADER_COUNT: usize = 1000;
/// The largest stream ID (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7FFF_FFFF;

/// RST_STREAM status: the frame or stream broke the protocol.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream is unknown.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status: the stream was refused before any processing.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is no longer needed.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: the endpoint failed.
pub const RST_INTERNAL_ERROR: u32 = 6;
/// GOAWAY status: a normal end.
pub const GOAWAY_OK: u32 = 0;
/// GOAWAY status: the peer broke the protocol.
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// A header block: name/value pairs in wire order. Names are lowercase on the wire (Kubernetes
/// sends `streamtype`, `port`, `requestid`); a value holding several values separates them with
/// NUL. Bytes that are not UTF-8 are replaced (U+FFFD) when decoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// These headers plus `name: value`, `name` lowercased.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.push(name, value);
        self
    }

    /// Adds `name: value`, `name` lowercased.
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The first value of the first header called `name` (ASCII case-insensitive): the text
    /// before the first NUL.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.split('\0').next())
    }

    /// The pairs in wire order, values unsplit.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed block: u32 pair count, then per pair u32 name length, name, u32 value
    /// length, value (all big-endian).
    fn to_block(&self) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::new();
        out.put_u32(len_u32(self.0.len())?);
        for (n, v) in &self.0 {
            out.put_u32(len_u32(n.len())?);
            out.put_slice(n.as_bytes());
            out.put_u32(len_u32(v.len())?);
            out.put_slice(v.as_bytes());
        }
        Ok(out)
    }

    /// Parses an uncompressed block. Errors on a truncated block, more than
    /// [`MAX_HEADER_COUNT`] pairs, or bytes left over.
    fn from_block(block: &[u8]) -> Result<Self, SpdyError> {
        let mut r = Reader(block);
        let count = r.u32()? as usize;
        if count > MAX_HEADER_COUNT || count > r.0.len() / 8 {
            return Err(SpdyError::Protocol("too many headers in a header block"));
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.bytes()?;
            let v = r.bytes()?;
            pairs.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        }
        if !r.0.is_empty() {
            return Err(SpdyError::Protocol("bytes after the last header"));
        }
        Ok(Self(pairs))
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The entry's flags (persist value 0x1, persisted 0x2).
    pub flags: u8,
    /// The setting ID (24 bits).
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// A SPDY/3.1 frame. Stream IDs are 31-bit (clients use odd ones, servers even ones); `flags`
/// are the frame's flag byte ([`FLAG_FIN`], [`FLAG_UNIDIRECTIONAL`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's ID (non-zero).
        stream_id: u32,
        /// The stream it belongs to (0 for none; server push only).
        associated_to: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// The credential slot (unused, 0).
        slot: u8,
        /// [`FLAG_FIN`] and/or [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The stream's headers (`streamtype`, `port`, `requestid` for Kubernetes).
        headers: Headers,
    },
    /// Accepts a stream the peer opened.
    SynReply {
        /// The accepted stream (non-zero).
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// Reply headers (empty for Kubernetes).
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream (non-zero).
        stream_id: u32,
        /// Why ([`RST_PROTOCOL_ERROR`], [`RST_CANCEL`], ...).
        status: u32,
    },
    /// Connection settings (spdystream never sends them; ignored here).
    Settings {
        /// 0x1 = clear persisted settings.
        flags: u8,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// A liveness check; the receiver echoes pings the other side started.
    Ping {
        /// Odd when the client started it, even for the server.
        id: u32,
    },
    /// The sender will open no more streams; the connection is ending.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// [`GOAWAY_OK`] or [`GOAWAY_PROTOCOL_ERROR`].
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream (non-zero).
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow-control credit (spdystream never sends it; ignored here).
    WindowUpdate {
        /// The stream, 0 for the connection.
        stream_id: u32,
        /// The credit in bytes (31 bits).
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream (non-zero).
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// At most [`MAX_PAYLOAD`] bytes.
        data: Bytes,
    },
}

/// Encodes and decodes the frames of one connection, keeping its two zlib streams (one
/// compressor for the frames this side writes, one decompressor for the frames it reads) across
/// frames, as SPDY requires. Use the same codec for all frames of a connection, in order.
pub struct FrameCodec {
    /// Made on first use: a compressor holds a few hundred KiB and the reading side of a
    /// connection never needs one.
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FrameCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec").finish_non_exhaustive()
    }
}

impl FrameCodec {
    /// A codec at the start of a connection.
    pub fn new() -> Self {
        Self { deflate: None, inflate: None }
    }

    /// Takes one frame off the front of `buf`, or `Ok(None)` (and `buf` untouched) when `buf`
    /// does not hold a whole frame yet. Control frames of unknown types (NOOP, CREDENTIAL) are
    /// skipped. Never panics, whatever `buf` holds.
    ///
    /// # Errors
    /// [`SpdyError::Protocol`] for a control frame of another version than 3, a malformed frame or
    /// header block, or stream ID 0 where one is needed; [`SpdyError::TooLarge`] for a control frame
    /// over [`MAX_CONTROL_PAYLOAD`] or a header block inflating beyond [`MAX_HEADER_BLOCK`];
    /// [`SpdyError::Compression`] when the header block is not valid zlib with the SPDY
    /// dictionary. After an error the connection is unusable (the zlib stream is out of step).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        loop {
            let Some(head) = buf.get(..8) else { return Ok(None) };
            let w0 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let w1 = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let flags = (w1 >> 24) as u8;
            let len = (w1 & 0x00FF_FFFF) as usize;
            let control = w0 & 0x8000_0000 != 0;
            if control {
                if (w0 >> 16) & 0x7FFF != u32::from(VERSION) {
                    return Err(SpdyError::Protocol(
                        "control frame of another SPDY version than 3",
                    ));
                }
                if len > MAX_CONTROL_PAYLOAD {
                    return Err(SpdyError::TooLarge(len));
                }
            }
            if buf.len() < 8 + len {
                return Ok(None);
            }
            buf.advance(8);
            let payload = buf.split_to(len).freeze();
            if !control {
                let stream_id = w0 & MAX_STREAM_ID;
                if stream_id == 0 {
                    return Err(SpdyError::Protocol("DATA frame on stream 0"));
                }
                return Ok(Some(Frame::Data { stream_id, flags, data: payload }));
            }
            if let Some(frame) = self.control(w0 as u16, flags, &payload)? {
                return Ok(Some(frame));
            }
        }
    }

    fn control(&mut self, kind: u16, flags: u8, p: &[u8]) -> Result<Option<Frame>, SpdyError> {
        let mut r = Reader(p);
        let frame = match kind {
            TYPE_SYN_STREAM => {
                let stream_id = r.u32()? & MAX_STREAM_ID;
                let associated_to = r.u32()? & MAX_STREAM_ID;
                let priority = r.u8()? >> 5;
                let slot = r.u8()?;
                let headers = self.inflate_headers(r.0)?;
                nonzero(stream_id)?;
                Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let stream_id = r.u32()? & MAX_STREAM_ID;
                let headers = self.inflate_headers(r.0)?;
                nonzero(stream_id)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply { stream_id, flags, headers }
                } else {
                    Frame::Headers { stream_id, flags, headers }
                }
            }
            TYPE_RST_STREAM => {
                exact(p, 8)?;
                let stream_id = nonzero(r.u32()? & MAX_STREAM_ID)?;
                Frame::RstStream { stream_id, status: r.u32()? }
            }
            TYPE_SETTINGS => {
                let n = r.u32()? as usize;
                if r.0.len() / 8 != n || r.0.len() % 8 != 0 {
                    return Err(SpdyError::Protocol("SETTINGS length does not match its count"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let w = r.u32()?;
                    entries.push(Setting {
                        flags: (w >> 24) as u8,
                        id: w & 0x00FF_FFFF,
                        value: r.u32()?,
                    });
                }
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                exact(p, 4)?;
                Frame::Ping { id: r.u32()? }
            }
            TYPE_GOAWAY => {
                exact(p, 8)?;
                Frame::GoAway { last_good_stream_id: r.u32()? & MAX_STREAM_ID, status: r.u32()? }
            }
            TYPE_WINDOW_UPDATE => {
                exact(p, 8)?;
                Frame::WindowUpdate {
                    stream_id: r.u32()? & MAX_STREAM_ID,
                    delta: r.u32()? & MAX_STREAM_ID,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }

    /// Appends `frame` to `dst`, compressing its header block, if any, with this connection's
    /// compressor (sync-flushed, so the peer can inflate it at once).
    ///
    /// # Errors
    /// [`SpdyError::Protocol`] for a stream ID over 31 bits or 0 where one is needed, a priority
    /// over 7, a setting ID over 24 bits or a window delta over 31 bits;
    /// [`SpdyError::TooLarge`] for a payload over [`MAX_PAYLOAD`]. `dst` is untouched on error,
    /// but a header block that was compressed stays in the zlib stream, so after an error on a
    /// frame with headers the connection is unusable.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::SynStream { stream_id, associated_to, priority, slot, flags, headers } => {
                nonzero(stream_id31(*stream_id)?)?;
                stream_id31(*associated_to)?;
                if *priority > 7 {
                    return Err(SpdyError::Protocol("priority over 7"));
                }
                let block = self.deflate_headers(headers)?;
                let mut p = Vec::with_capacity(10 + block.len());
                p.put_u32(*stream_id);
                p.put_u32(*associated_to);
                p.put_u8(priority << 5);
                p.put_u8(*slot);
                p.put_slice(&block);
                put_control(dst, TYPE_SYN_STREAM, *flags, &p)
            }
            Frame::SynReply { stream_id, flags, headers }
            | Frame::Headers { stream_id, flags, headers } => {
                nonzero(stream_id31(*stream_id)?)?;
                let block = self.deflate_headers(headers)?;
                let mut p = Vec::with_capacity(4 + block.len());
                p.put_u32(*stream_id);
                p.put_slice(&block);
                let kind = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                put_control(dst, kind, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => {
                nonzero(stream_id31(*stream_id)?)?;
                put_control(dst, TYPE_RST_STREAM, 0, &two(*stream_id, *status))
            }
            Frame::Settings { flags, entries } => {
                let mut p = Vec::with_capacity(4 + 8 * entries.len());
                p.put_u32(len_u32(entries.len())?);
                for e in entries {
                    if e.id > 0x00FF_FFFF {
                        return Err(SpdyError::Protocol("setting ID over 24 bits"));
                    }
                    p.put_u32(u32::from(e.flags) << 24 | e.id);
                    p.put_u32(e.value);
                }
                put_control(dst, TYPE_SETTINGS, *flags, &p)
            }
            Frame::Ping { id } => put_control(dst, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good_stream_id, status } => {
                stream_id31(*last_good_stream_id)?;
                put_control(dst, TYPE_GOAWAY, 0, &two(*last_good_stream_id, *status))
            }
            Frame::WindowUpdate { stream_id, delta } => {
                stream_id31(*stream_id)?;
                if *delta > MAX_STREAM_ID {
                    return Err(SpdyError::Protocol("window delta over 31 bits"));
                }
                put_control(dst, TYPE_WINDOW_UPDATE, 0, &two(*stream_id, *delta))
            }
            Frame::Data { stream_id, flags, data } => {
                nonzero(stream_id31(*stream_id)?)?;
                if data.len() > MAX_PAYLOAD {
                    return Err(SpdyError::TooLarge(data.len()));
                }
                dst.reserve(8 + data.len());
                dst.put_u32(*stream_id);
                dst.put_u32(u32::from(*flags) << 24 | data.len() as u32);
                dst.put_slice(data);
                Ok(())
            }
        }
    }

    /// Inflates one header block with this connection's decompressor and parses it. Public for
    /// fuzzing ([`super::fuzz_decode`]); frames go through [`FrameCodec::decode`].
    ///
    /// # Errors
    /// As [`FrameCodec::decode`] for header blocks.
    pub fn inflate_headers(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let block = self.inflate(compressed)?;
        Headers::from_block(&block)
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let d = self.inflate.get_or_insert_with(|| Decompress::new(true));
        let mut out = Vec::with_capacity(256.min(MAX_HEADER_BLOCK));
        let start = d.total_in();
        let mut dictionary_set = false;
        loop {
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::TooLarge(out.len()));
            }
            if out.len() == out.capacity() {
                let room = MAX_HEADER_BLOCK - out.len();
                if room == 0 {
                    return Err(SpdyError::TooLarge(out.len()));
                }
                out.reserve_exact(out.len().max(256).min(room));
            }
            let done = consumed(d.total_in(), start, input.len())?;
            let (before_in, before_out) = (d.total_in(), d.total_out());
            match d.decompress_vec(&input[done..], &mut out, FlushDecompress::Sync) {
                Ok(Status::Ok | Status::BufError) => {}
                Ok(Status::StreamEnd) if out.len() <= MAX_HEADER_BLOCK => return Ok(out),
                Ok(Status::StreamEnd) => return Err(SpdyError::TooLarge(out.len())),
                Err(e) if e.needs_dictionary().is_some() && !dictionary_set => {
                    d.set_dictionary(HEADER_DICTIONARY)
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    dictionary_set = true;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(SpdyError::TooLarge(out.len()));
            }
            let done = consumed(d.total_in(), start, input.len())?;
            if done == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if d.total_in() == before_in
                && d.total_out() == before_out
                && out.len() < out.capacity()
            {
                return Err(SpdyError::Compression("the header block does not inflate".into()));
            }
        }
    }

    fn deflate_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let input = headers.to_block()?;
        if input.len() > MAX_PAYLOAD {
            return Err(SpdyError::TooLarge(input.len()));
        }
        let c = match &mut self.deflate {
            Some(c) => c,
            fresh @ None => {
                let mut c = Compress::new(Compression::default(), true);
                c.set_dictionary(HEADER_DICTIONARY)
                    .map_err(|e| SpdyError::Compression(e.to_string()))?;
                fresh.insert(c)
            }
        };
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start = c.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let done = consumed(c.total_in(), start, input.len())?;
            c.compress_vec(&input[done..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            // A sync flush is complete once the compressor stops short of the output's end.
            if consumed(c.total_in(), start, input.len())? == input.len()
                && out.len() < out.capacity()
            {
                return Ok(out);
            }
        }
    }
}

/// How much of an input of `len` bytes a zlib stream has taken since `start`.
fn consumed(total: u64, start: u64, len: usize) -> Result<usize, SpdyError> {
    usize::try_from(total.saturating_sub(start))
        .ok()
        .filter(|n| *n <= len)
        .ok_or_else(|| SpdyError::Compression("zlib overran its input".into()))
}

fn put_control(dst: &mut BytesMut, kind: u16, flags: u8, payload: &[u8]) -> Result<(), SpdyError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(SpdyError::TooLarge(payload.len()));
    }
    dst.reserve(8 + payload.len());
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u32(u32::from(flags) << 24 | payload.len() as u32);
    dst.put_slice(payload);
    Ok(())
}

fn two(a: u32, b: u32) -> [u8; 8] {
    let mut p = [0; 8];
    p[..4].copy_from_slice(&a.to_be_bytes());
    p[4..].copy_from_slice(&b.to_be_bytes());
    p
}

fn len_u32(n: usize) -> Result<u32, SpdyError> {
    u32::try_from(n).map_err(|_| SpdyError::TooLarge(n))
}

fn stream_id31(id: u32) -> Result<u32, SpdyError> {
    if id > MAX_STREAM_ID {
        return Err(SpdyError::Protocol("stream ID over 31 bits"));
    }
    Ok(id)
}

fn nonzero(id: u32) -> Result<u32, SpdyError> {
    if id == 0 {
        return Err(SpdyError::Protocol("stream ID 0"));
    }
    Ok(id)
}

fn exact(p: &[u8], len: usize) -> Result<(), SpdyError> {
    if p.len() != len {
        return Err(SpdyError::Protocol("control frame of the wrong length"));
    }
    Ok(())
}

/// A cursor over a payload whose reads fail, rather than panic, past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpdyError> {
        if self.0.len() < n {
            return Err(SpdyError::Protocol("truncated frame"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, SpdyError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, SpdyError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u32 length, then that many bytes.
    fn bytes(&mut self) -> Result<&'a [u8], SpdyError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}
